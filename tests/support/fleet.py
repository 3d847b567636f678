"""Helpers for tests that drive real processes: waiting, free ports, agents and their pings."""

import contextlib
import os
import socket
import time
from pathlib import Path

import pytest

from cmdb.celery import app
from cmdb.jobs.choices import HostTaskStateChoices as State
from deploy import broker
from wire import signing

#: The agents the session's fleet runs (tests/conftest.py).
AGENT_IPS = ["127.0.1.1", "127.0.1.2"]
#: Their public keys (PEM) by IP, as they registered them: a host the tests make again after
#: the inventory was emptied is the same agent's (tests.support.factories.make_host).
AGENT_KEYS: dict[str, str] = {}
AGENT_KEY_FILES: dict[str, Path] = {}
#: Agents the suite starts are accepted as they come (CMDB_AUTO_ACCEPT): the suite's own, on
#: this machine. Beyond, 127.0.1.128 and up, keys wait for an operator (tests/security).
AUTO_ACCEPTED = "127.0.1.0/25"
ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """The first true value of ``predicate()`` within ``timeout`` seconds; else TimeoutError
    naming what was awaited and the last value seen."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {value!r})")


def free_port() -> int:
    """A TCP port nobody listens on now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping_nodes(app, names: list[str]) -> bool:
    replies = app.control.ping(destination=names, timeout=1.0)
    seen = {name for reply in replies for name in reply}
    return set(names) <= seen


@contextlib.contextmanager
def rooted_agents(fleet, ips: list[str], base: Path):
    """Agents on ``ips``, each seeing its own folder under ``base`` as "/" for pushes and
    fetches (one machine, several hosts that must not overwrite each other's files)."""
    roots = {ip: base / ip for ip in ips}
    for ip, root in roots.items():
        root.mkdir()
        fleet.start_agent(ip, concurrency=1, extra_env={"CMDB_AGENT_ROOT": str(root)})
    nodes = [f"agent@{ip}" for ip in ips]
    wait_for(lambda: ping_nodes(app, nodes), 90, f"{nodes} to answer pings", interval=0.5)
    remember_keys(fleet, ips)
    try:
        yield roots
    finally:
        for ip in ips:
            fleet.stop(f"agent-{ip}")


#: The variable an agent of host_aware_agents has its IP in, for its commands.
HOST_IP_VAR = "CMDB_TEST_HOST_IP"


@contextlib.contextmanager
def host_aware_agents(fleet, ips: list[str]):
    """Agents on ``ips`` whose commands find their host's IP in $CMDB_TEST_HOST_IP: one command
    that fails on chosen hosts only (`case $CMDB_TEST_HOST_IP in 127.0.1.31) exit 1;; esac`)."""
    for ip in ips:
        fleet.start_agent(ip, extra_env={HOST_IP_VAR: ip})
    nodes = [f"agent@{ip}" for ip in ips]
    wait_for(lambda: ping_nodes(app, nodes), 90, f"{nodes} to answer pings", interval=0.5)
    remember_keys(fleet, ips)
    try:
        yield ips
    finally:
        for ip in ips:
            fleet.stop(f"agent-{ip}")


def fails_on(*ips: str, then: str = "true") -> str:
    """A command that exits 1 on ``ips`` (agents of host_aware_agents) and runs ``then`` on the
    others."""
    return f"case ${HOST_IP_VAR} in {'|'.join(ips)}) exit 1;; esac; {then}"


def remember_keys(fleet, ips: list[str], timeout: float = 30) -> None:
    """Keep these agents' public keys (AGENT_KEYS), read where each made it when it started
    (its state folder, deploy.local.Fleet.start_agent)."""

    def made():
        paths = {ip: fleet.run_dir / "agent-state" / ip / "agent_key.pub" for ip in ips}
        return {ip: p.read_text() for ip, p in paths.items() if p.exists()}

    keys = wait_for(lambda: (k := made()) and len(k) == len(ips) and k, timeout,
                    f"{ips} to make their keys", interval=0.2)  # fmt: skip
    AGENT_KEYS.update(keys)
    AGENT_KEY_FILES.update({ip: fleet.run_dir / "agent-state" / ip / "agent_key" for ip in keys})


def agent_private_key(ip: str):
    """The private key the suite's agent on ``ip`` made (remember_keys has found it)."""
    if ip not in AGENT_KEY_FILES:
        raise KeyError(f"no agent of the suite made a key for {ip}")
    return signing.load_private_key(AGENT_KEY_FILES[ip])


def dropped_counts() -> dict[str, int]:
    """How many messages the server has not believed so far, by kind and reason."""
    from cmdb.jobs import trust

    return trust.dropped_counts(app)


def wait_dropped(reason: str, before: dict[str, int], timeout: float = 30) -> int:
    """Wait until the server has dropped one more message for ``reason`` ("report: unsigned")
    than ``before`` says; return how many more."""
    return wait_for(lambda: dropped_counts().get(reason, 0) - before.get(reason, 0), timeout,
                    f"the server to drop a message ({reason})")  # fmt: skip


def redis7() -> str:
    """Debian's redis-server (or $REDIS7_SERVER): the broker recipe needs Redis >= 7. CI installs
    it (.ci/run), so there a missing one is a failure, not a skip."""
    binary = broker.find_redis7()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(broker.E_NO_REDIS7)
        pytest.skip(broker.E_NO_REDIS7)
    return binary


def startup_collections_done(count: int) -> bool:
    # Here: conftest imports this module before pytest-django has set Django up.
    from cmdb.jobs.models import HostTask

    tasks = HostTask.objects.filter(job__requested_by__startswith="agent start")
    return tasks.count() >= count and not tasks.filter(state__in=State.active()).exists()
