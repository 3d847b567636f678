"""Model factories and test data: hosts, signed headers, archives to upload."""

import io
import tarfile

from cmdb.hosts.choices import AgentStatusChoices
from cmdb.hosts.models import Host


def make_host(ip: str, hostname: str = "", with_agent: bool = True) -> Host:
    # update_or_create: a real agent may have registered the host already.
    host, _ = Host.objects.update_or_create(
        ip=ip,
        defaults={
            "hostname": hostname,
            "agent_name": f"agent@{ip}" if with_agent else "",
            "agent_status": (
                AgentStatusChoices.ONLINE if with_agent else AgentStatusChoices.UNKNOWN
            ),
        },
    )
    return host


def signed_headers(task: str, ip: str, task_id: str, spec: dict, ttl: float = 60, key=None):
    """The headers the server would put on a message for ``task`` on ``ip`` (its own key unless
    ``key`` is given), valid for ``ttl`` seconds (negative: expired)."""
    import math
    import time

    from cmdb.jobs import signer
    from wire import signing

    deadline = math.ceil(time.time() + ttl)
    return {signing.HEADER: signing.sign(key or signer.private_key(), task, ip, task_id,
                                         deadline, spec)}  # fmt: skip


def tar_upload(
    members: dict[str, bytes], mode: str = "w:gz", name: str = "archive.tar.gz",
    executable: set[str] = frozenset(),
) -> io.BytesIO:  # fmt: skip
    """A tar of ``members`` (name -> content) in memory, at its start and named like an
    uploaded file; the names in ``executable`` get mode 0755, the others 0644."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode=mode) as tar:
        for member, content in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(content), 0o755 if member in executable else 0o644
            tar.addfile(info, io.BytesIO(content))
    data.seek(0)
    data.name = name
    return data
