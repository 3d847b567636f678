"""The broker behind Redis Sentinel: the server and an agent on a ``sentinel://`` URL.

A real master, its replica and a sentinel watching them (redis-server 7 ``--sentinel``), the
central worker and an agent pointed at the sentinels with CMDB_BROKER_MASTER_NAME: the everyday
loop runs, then the sentinel fails the master over to the replica, and the next command runs
on the new master while what was stored before stays as it was. Every direct use of Redis goes
through kombu's client (cmdb.jobs.broker.redis_client, Agent.redis(), the intake's channel
client), which asks the sentinels where the master is whenever it reconnects.
"""

import subprocess

import pytest
import redis
from django_celery_results.models import TaskResult

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from deploy.local import Fleet
from tests.support.cli import ID_LINE
from tests.support.fleet import free_port, redis7, wait_for
from wire import names

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

IP = "127.0.1.68"  # auto-accepted, nobody else's
MASTER = "cmdb-broker"
#: Fast verdicts: a test cannot wait Sentinel's default 30 s before a master counts as down.
SENTINEL_CONF = """port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {name} 127.0.0.1 {master} 1
sentinel down-after-milliseconds {name} 1000
sentinel failover-timeout {name} 10000
sentinel parallel-syncs {name} 1
"""


def start_redis(fleet: Fleet, name: str, port: int, *options: str) -> subprocess.Popen:
    data = fleet.run_dir / name
    data.mkdir(parents=True, exist_ok=True)
    proc = fleet.spawn(name, [redis7(), "--port", str(port), "--bind", "127.0.0.1",
                              "--dir", str(data), "--save", "", "--appendonly", "no",
                              *options])  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=1)
    wait_for(lambda: _answers(client, proc), 20, f"{name} to answer")
    return proc


def start_sentinel(fleet: Fleet, port: int, master_port: int) -> subprocess.Popen:
    folder = fleet.run_dir / "sentinel"
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "sentinel.conf"  # Sentinel rewrites it: its own file, in its own folder
    conf.write_text(SENTINEL_CONF.format(port=port, dir=folder, name=MASTER, master=master_port))
    proc = fleet.spawn("sentinel", [redis7(), str(conf), "--sentinel"])
    wait_for(lambda: _answers(redis.Redis(port=port, socket_connect_timeout=1), proc), 20,
             "the sentinel to answer")  # fmt: skip
    return proc


def _answers(client: redis.Redis, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"redis-server exited with {proc.returncode}")
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def master_port(sentinel: redis.Redis) -> int | None:
    found = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
    return int(found[1]) if found else None


def replica_known(sentinel: redis.Redis, port: int) -> bool:
    """The sentinel lists the replica and takes it for healthy: it could fail over to it."""
    # redis-py parses each into a dict, its "flags" into booleans (is_slave, is_sdown, ...).
    for info in sentinel.sentinel_slaves(MASTER):
        healthy = info["is_slave"] and not info["is_sdown"] and info["master-link-status"] == "ok"
        if int(info["port"]) == port and healthy:
            return True
    return False


def record(task_id: str) -> tuple:
    """What the server stored of a host task and its TaskResult."""
    t = HostTask.objects.get(task_id=task_id)
    r = TaskResult.objects.get(task_id=task_id)
    return (t.state, t.exit_code, t.stdout_head, t.finished_at, t.error,
            r.status, r.result, r.date_done)  # fmt: skip


def test_the_loop_runs_on_a_sentinel_broker_and_again_after_a_failover(
    tmp_path, process_env, manage
):  # fmt: skip
    ports = {name: free_port() for name in ("master", "replica", "sentinel", "nobody")}
    # Two sentinels named, the first down: kombu asks each in turn.
    url = (f"sentinel://127.0.0.1:{ports['nobody']}/0;"
           f"sentinel://127.0.0.1:{ports['sentinel']}/0")  # fmt: skip
    env = {**process_env, "REDIS_URL": url, "CMDB_BROKER_MASTER_NAME": MASTER}
    fleet = Fleet(tmp_path / "sentinel", env)
    sentinel = redis.Redis(port=ports["sentinel"], socket_timeout=5)
    try:
        start_redis(fleet, "master", ports["master"])
        start_redis(fleet, "replica", ports["replica"], "--replicaof", "127.0.0.1",
                    str(ports["master"]))  # fmt: skip
        start_sentinel(fleet, ports["sentinel"], ports["master"])
        wait_for(lambda: replica_known(sentinel, ports["replica"]), 30,
                 "the sentinel to know the replica", interval=0.3)  # fmt: skip
        fleet.start_central(concurrency=2, name="central-sentinel")
        fleet.start_agent(IP, concurrency=1)

        def runs(command: str):
            out = manage("run", command, "--hosts", IP, env=env, timeout=60)
            if out.returncode != 0:
                return None  # the agent not registered yet, or the broker failing over
            job = ID_LINE.search(out.stdout).group(1)
            done = manage("check_task", job, "--wait", "--wait-timeout", "20", env=env)
            if done.returncode != 0 or command.split()[-1] not in done.stdout:
                return None
            return HostTask.objects.get(job_id=job).task_id

        before = wait_for(lambda: runs("echo before"), 120, "the first run", interval=1.0)
        stored = record(before)
        assert stored[:3] == (State.OK, 0, "before\n")
        # Where the agent and the server really went: the master, not the sentinel.
        master = redis.Redis(port=ports["master"])
        assert master.exists(names.CLAIMED_KEY.format(host=IP, task_id=before))

        sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
        wait_for(lambda: master_port(sentinel) == ports["replica"], 30,
                 "the sentinel to promote the replica", interval=0.2)  # fmt: skip

        after = wait_for(lambda: runs("echo after"), 120, "a run after the failover", interval=1.0)
        assert record(after)[:3] == (State.OK, 0, "after\n")
        promoted = redis.Redis(port=ports["replica"])
        assert promoted.exists(names.CLAIMED_KEY.format(host=IP, task_id=after))
        assert record(before) == stored
        log = (fleet.logs / "central-sentinel.log").read_text()
        assert "results intake failed" not in log
    finally:
        fleet.stop_all()
