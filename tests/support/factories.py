"""Model factories and test data: hosts, signed headers, archives to upload."""

import dataclasses
import io
import tarfile
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cmdb.hosts.choices import AgentStatusChoices, KeyStateChoices
from cmdb.hosts.models import Host
from tests.support.fleet import AGENT_KEYS, agent_private_key
from wire import signing
from wire.messages import Registration, Report


def make_host(ip: str, hostname: str = "", with_agent: bool = True, key: bool = True) -> Host:
    """A host whose agent's key is accepted, its agent online (``with_agent=False``: none runs,
    or none has said so). ``key=False``: as an operator adds one, no key yet (it receives
    nothing)."""
    # update_or_create: a real agent may have registered the host already (its key is kept).
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
    if key and not host.agent_key:
        # The key of the suite's agent on that IP if there is one, else a key of its own.
        pem = AGENT_KEYS.get(ip) or signing.public_pem(HOST_KEYS.setdefault(
            ip, Ed25519PrivateKey.generate())).decode()  # fmt: skip
        host.agent_key, host.key_state = pem, KeyStateChoices.ACCEPTED
        host.key_fingerprint = signing.key_fingerprint(signing.public_key_from_pem(pem))
        host.save(update_fields=["agent_key", "key_state", "key_fingerprint"])
    return host


#: The private keys of test hosts that have no real agent (make_host made them).
HOST_KEYS: dict[str, Ed25519PrivateKey] = {}


def host_private_key(ip: str) -> Ed25519PrivateKey:
    """The key a host's agent signs with: a real agent's of the suite, or make_host's own."""
    # In make_host's order: a suite agent's key first (HOST_KEYS may hold one made for its IP
    # by a test that ran before the fleet started).
    return agent_private_key(ip) if ip in AGENT_KEYS else HOST_KEYS[ip]


def from_host(task, message, key: Ed25519PrivateKey | None = None, **changes) -> dict:
    """``message`` (a Started, a Report, or a raw dict) as the agent of ``task``'s host sends it:
    for that host, signed with its key (``key``: someone else's). The host is made (accepted)
    if the test has none."""
    if task.host_id is None:
        task.host = make_host(task.ip, with_agent=False)
        task.save(update_fields=["host"])
    key = key or host_private_key(task.ip)
    if not isinstance(message, dict) and not changes:
        return dataclasses.replace(message, host=task.ip).signed(key).to_wire()
    # A raw dict (another version, a field of another type) is signed as a report would be.
    what = Report.WHAT if isinstance(message, dict) else message.WHAT
    raw = {**(message if isinstance(message, dict) else message.to_wire()), "host": task.ip,
           **changes}  # fmt: skip
    raw.pop("signature", None)
    return {**raw, "signature": signing.sign_document(key, {**raw, "what": what})}


def signed_registration(ip: str, key: Ed25519PrivateKey | None = None, **fields) -> Registration:
    """What an agent with ``key`` (a new one unless given) sends when it starts."""
    key = key or Ed25519PrivateKey.generate()
    fields.setdefault("started_at", time.time())
    registration = Registration(ip=ip, agent=f"agent@{ip}", agent_pid=fields.pop("agent_pid", 7),
                                pubkey=signing.public_pem(key).decode(), **fields)  # fmt: skip
    return registration.signed(key)


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
