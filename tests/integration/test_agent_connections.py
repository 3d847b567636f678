"""What a real agent holds on the broker once its pool has worked (workers.connections): the
consumer's BRPOP and one connection for everything else, however many children ran tasks."""

import collections
import contextlib
import os

import psutil
import pytest

from cmdb.celery import app
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.dispatch import CommandRequest, dispatch_command
from cmdb.jobs.models import HostTask
from tests.support.cli import wait_state
from tests.support.factories import make_host
from tests.support.fleet import remember_keys, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

IP = "127.0.1.44"
RC_IP = "127.0.1.45"


def held(client, agent: psutil.Process) -> collections.Counter:
    """The broker's clients whose connection is the agent's (its main process or a pool
    child), by the client's last command as Redis lists it."""
    pids = {agent.pid, *(c.pid for c in agent.children() if os.getsid(c.pid) == agent.pid)}
    ports = {c.laddr.port for c in psutil.net_connections(kind="tcp")
             if c.pid in pids and c.raddr}  # fmt: skip
    return collections.Counter(
        entry["cmd"] for entry in client.client_list()
        if int(entry["addr"].rpartition(":")[2]) in ports
    )  # fmt: skip


def worked_agent(fleet, ip: str, env: dict) -> psutil.Process:
    """An agent with two pool children, each of which has run a command."""
    proc = fleet.start_agent(ip, concurrency=2, extra_env=env)
    remember_keys(fleet, [ip])
    make_host(ip)
    # Both at once: each takes a child while the other sleeps.
    jobs = [dispatch_command(CommandRequest("sleep 2", [ip], timeout=30, reach_timeout=60), app)
            for _ in range(2)]  # fmt: skip
    for task in HostTask.objects.filter(job__in=jobs):
        assert wait_state(task.task_id, {State.OK}, timeout=60).state == State.OK
    return psutil.Process(proc.pid)


@pytest.mark.parametrize(("ip", "env", "most"), [
    (IP, {"CMDB_AGENT_REMOTE_CONTROL": "0"}, 2),  # as the unit runs it
    (RC_IP, {}, 3),  # remote control (ping) adds its PSUBSCRIBE
])  # fmt: skip
def test_an_agent_whose_children_ran_tasks_holds_two_broker_connections(fleet, ip, env, most):
    agent = worked_agent(fleet, ip, env)
    try:
        seen = collections.Counter()
        with redis_client(app) as client:

            def few() -> bool:
                seen.clear()
                seen.update(held(client, agent))
                return sum(seen.values()) <= most

            # A child closes its connection once its task's result is sent: give it a moment.
            with contextlib.suppress(TimeoutError):
                wait_for(few, 10, "the children to let go", interval=0.5)
        assert seen["brpop"] == 1, seen
        assert sum(seen.values()) <= most, seen
    finally:
        fleet.stop(f"agent-{ip}")
