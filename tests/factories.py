"""Model factories for tests."""

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
    from workers import signing

    deadline = math.ceil(time.time() + ttl)
    return {signing.HEADER: signing.sign(key or signer.private_key(), task, ip, task_id,
                                         deadline, spec)}  # fmt: skip
