"""Broker isolation (issue 13): each host's agent has a Redis user of its own, allowed only what an
agent needs (wire.transport.agent_acl_rules, as `manage.py broker_acl` writes it).

A real Redis 7 runs the aclfile the command prints; the central worker and a real agent use the
URLs it prints; the everyday loop works through them; then, as that host's user with a plain
Redis client, every attack on another host, the results or the broker itself is refused (NOPERM).
"""

import os
import re
import signal
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from cmdb.hosts.choices import KeyStateChoices as Key
from cmdb.hosts.models import Host
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from deploy import broker
from deploy.local import Fleet
from tests.support.cli import ID_LINE, dispatch, wait_state
from tests.support.factories import make_host
from tests.support.fleet import ROOT, free_port, redis7, remember_keys, wait_for
from wire import names, transport

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

A, B = "127.0.1.110", "127.0.1.111"  # auto-accepted (tests.support.fleet.AUTO_ACCEPTED)
USER_A, USER_B = transport.agent_username(A), transport.agent_username(B)
SERVER = "cmdb-server"
SHA = "ab" * 32


def broker_acl(env: dict, *args: str) -> tuple[str, dict[str, str]]:
    """`manage.py broker_acl ARGS` as an operator runs it: its aclfile lines (stdout) and the
    broker URL it printed (stderr) for each user, by user name."""
    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "broker_acl", *args],
                         cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert out.returncode == 0, out.stderr
    urls = re.findall(r"^REDIS_URL=(\S+)$", out.stderr, re.M)
    return out.stdout, {urlsplit(url).username: url for url in urls}


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, process_env, django_db_blocker):
    """A Redis 7 with the generated aclfile, a central worker as the server's user and host A's
    agent as A's (B has a user and no agent)."""
    binary = redis7()
    run_dir = tmp_path_factory.mktemp("acl")
    port = free_port()
    address = f"redis://127.0.0.1:{port}/0"
    acl, urls = broker_acl(process_env, "--server", A, B, "--broker", address)
    aclfile = run_dir / "users.acl"
    aclfile.write_text(acl)
    fleet = Fleet(run_dir, {**process_env, "REDIS_URL": urls[SERVER]})
    root = run_dir / "root"
    root.mkdir()
    try:
        fleet.start_redis(binary, broker.server_options(port, aclfile))
        fleet.start_central(concurrency=2, name="central-acl")
        # The unit (deploy/agent/cmdb-agent.service) runs agents without remote control too.
        agent_env = {"REDIS_URL": urls[USER_A], "CMDB_AGENT_REMOTE_CONTROL": "0",
                     "CMDB_AGENT_ROOT": str(root)}  # fmt: skip
        fleet.start_agent(A, concurrency=1, extra_env=agent_env)
        remember_keys(fleet, [A])
        with django_db_blocker.unblock():
            # Registered through A's user, and its startup collection came back the same way.
            try:
                wait_for(lambda: Host.objects.filter(ip=A, key_state=Key.ACCEPTED).exists(), 60,
                         "agent A to register")  # fmt: skip
                wait_for(lambda: HostTask.objects.filter(ip=A, state=State.OK).exists(), 60,
                         "agent A's startup collection")  # fmt: skip
            except TimeoutError as exc:
                refused = refusals(redis.Redis.from_url(urls[SERVER]), USER_A)
                raise AssertionError(f"{exc}; the broker refused agent A: {refused}") from exc
        yield {"fleet": fleet, "urls": urls, "address": address, "port": port, "root": root,
               "agent_env": agent_env, "aclfile": aclfile}  # fmt: skip
    finally:
        fleet.stop_all()


@pytest.fixture
def server(isolated):
    client = redis.Redis.from_url(isolated["urls"][SERVER])
    yield client
    client.close()


@pytest.fixture
def as_a(isolated):
    """A plain Redis client with host A's credentials: what whoever takes host A has."""
    client = redis.Redis.from_url(isolated["urls"][USER_A])
    yield client
    client.close()


@pytest.fixture
def cli(isolated, manage):
    """manage.py as the operator runs it on the server: with the server's broker user."""
    return lambda *args: manage(*args, env={"REDIS_URL": isolated["urls"][SERVER]})


def refusals(server, user: str) -> list[tuple]:
    """What the broker refused ``user`` (its ACL LOG): (reason, command, key or channel)."""
    return [(entry["reason"], entry["client-info"]["cmd"], entry["object"])
            for entry in server.acl_log(count=128) if entry["username"] == user]  # fmt: skip


def dispatched(out) -> str:
    assert out.returncode == 0, out.stderr
    return ID_LINE.search(out.stdout).group(1)


def ended_ok(job_id: str, timeout: float = 60) -> HostTask:
    task = HostTask.objects.get(job_id=job_id)
    done = wait_state(task.task_id, {State.OK, State.ERROR, State.FAILED, State.LOST}, timeout)
    assert done.state == State.OK, (done.state, done.error)
    return done


def test_the_everyday_loop_works_through_a_hosts_own_user(isolated, server, cli, tmp_path):
    make_host(A)
    with server.pubsub() as events:
        events.psubscribe("/0.celeryev/worker.*")  # heartbeats come through A's user

        job = dispatch(cli, "sleep 1; echo through its own user", A)
        task = HostTask.objects.get(job_id=job)
        wait_state(task.task_id, {State.RUNNING})  # the started notice
        assert ended_ok(job).stdout_head == "through its own user\n"

        def heartbeat_from_a() -> bool:
            data = (events.get_message(timeout=1.0) or {}).get("data")
            return isinstance(data, bytes) and A.encode() in data

        wait_for(heartbeat_from_a, 15, "a heartbeat of agent A")

    ended_ok(dispatched(cli("collect", "--hosts", A)))

    source = tmp_path / "motd"
    source.write_bytes(b"pushed through the acl\n")
    ended_ok(dispatched(cli("push", str(source), "/etc/acl/motd", "--hosts", A)))
    assert (isolated["root"] / "etc/acl/motd").read_bytes() == source.read_bytes()

    ended_ok(dispatched(cli("fetch", "/etc/acl/motd", "--hosts", A, "--to", str(tmp_path))))
    assert (tmp_path / A / "motd").read_bytes() == source.read_bytes()

    # Not one command of all that (its start included) was refused: the rules are what the
    # agent needs.
    assert refusals(server, USER_A) == []


def test_messages_an_agent_took_but_had_not_started_go_back_to_its_own_queue(isolated, server, cli):
    """kombu's bookkeeping of taken messages is the agent's own (names.UNACKED_KEYS): at a warm
    shutdown it puts them back into its queue, through its own user, and they run later."""
    make_host(A)
    server.acl_log_reset()
    fleet = isolated["fleet"]
    first = dispatch(cli, "sleep 6", A)
    wait_state(HostTask.objects.get(job_id=first).task_id, {State.RUNNING})
    second = dispatch(cli, "echo later", A)  # taken (concurrency 1), not started
    wait_for(lambda: server.hlen(f"unacked:{A}") == 1, 10, "A to take the second message")

    # A warm shutdown, as systemd stops the unit (KillMode=mixed: SIGTERM to the worker only).
    agent = fleet.processes[f"agent-{A}"]
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    fleet.stop(f"agent-{A}")

    assert server.llen(A) == 1 and server.hlen(f"unacked:{A}") == 0
    assert refusals(server, USER_A) == []
    fleet.start_agent(A, concurrency=1, extra_env=isolated["agent_env"])
    ended_ok(first)
    assert ended_ok(second).stdout_head == "later\n"


def _attacks():
    central, results = settings.CMDB["CENTRAL_QUEUE"], settings.CMDB["RESULTS_QUEUE"]
    claim_b = names.CLAIMED_KEY.format(host=B, task_id="7a0c")
    cancel = names.CANCELLED_KEY.format(task_id="7a0c")
    events = names.EVENTS_KEY.format(job="3f2a9c1e-0d4b-4e8f-9a6b-2c7d1e5f8a90")
    binding = f"_kombu.binding.{results}"
    sep = "\x06\x16"
    flush_all = "return redis.call('flushall')"
    attacks = {
        "read B's queue": lambda c: c.lrange(B, 0, -1),
        "take from B's queue": lambda c: c.brpop([B], 0.1),
        "push into B's queue": lambda c: c.lpush(B, "forged"),
        "read the results": lambda c: c.lrange(results, 0, -1),
        "take a result": lambda c: c.rpop(results),
        "take a registration": lambda c: c.brpop([central], 0.1),
        "bind the results to its own queue": lambda c: c.sadd(binding, sep.join([results, "", A])),
        "unbind the results": lambda c: c.delete(binding),
        "read a binding table": lambda c: c.smembers(binding),
        "read B's claim": lambda c: c.get(claim_b),
        "pre-claim B's task id": lambda c: c.set(claim_b, 1, nx=True),
        "delete B's claim": lambda c: c.delete(claim_b),
        "cancel a task": lambda c: c.set(cancel, 1),
        "lift a cancel mark": lambda c: c.delete(cancel),
        "write a pushed blob": lambda c: c.set(f"cmdb:blob:{SHA}:0", b"evil"),
        "delete a pushed blob": lambda c: c.unlink(f"cmdb:blob:{SHA}:meta"),
        "write into B's fetch": lambda c: c.set(f"cmdb:fetch-7-{B}:{SHA}:meta", "{}"),
        "read the server's taken messages": lambda c: c.hgetall("unacked"),
        "read the server's unacked index": lambda c: c.zrange("unacked_index", 0, -1),
        "read B's taken messages": lambda c: c.hgetall(f"unacked:{B}"),
        # Followers and the events API believe a job's stream: only the server writes it.
        "forge a job's event": lambda c: c.xadd(events, {"e": '{"type": "output"}'}),
        "overwrite a job's events": lambda c: c.set(events, "x"),
        "delete a job's events": lambda c: c.delete(events),
        "read a job's events": lambda c: c.xread({events: "0-0"}),
        "reset a job's event budget": lambda c: c.set(events + ":bytes", 0),
        "FLUSHALL": lambda c: c.flushall(),
        "FLUSHDB": lambda c: c.flushdb(),
        "CONFIG GET": lambda c: c.config_get("*"),
        "CONFIG SET": lambda c: c.config_set("maxmemory", "1mb"),
        "KEYS": lambda c: c.keys("*"),
        "SCAN": lambda c: c.scan(0),
        "MONITOR": lambda c: c.execute_command("MONITOR"),
        "ACL LIST": lambda c: c.acl_list(),
        "CLIENT LIST": lambda c: c.client_list(),
        "CLIENT KILL": lambda c: c.execute_command("CLIENT", "KILL", "USER", SERVER),
        "SHUTDOWN": lambda c: c.execute_command("SHUTDOWN", "NOSAVE"),
        "EVAL": lambda c: c.eval(flush_all, 0),
        "remote control (pidbox)": lambda c: c.publish("/0.celery.pidbox", "{}"),
        "remote control replies": lambda c: c.lpush("x.reply.celery.pidbox", "{}"),
        "listen to events": lambda c: c.execute_command("PSUBSCRIBE", "/0.celeryev/*"),
    }
    return list(attacks.items())


@pytest.mark.parametrize("what, attack", _attacks(), ids=[name for name, _ in _attacks()])
def test_a_hosts_user_is_refused_everything_else(isolated, as_a, server, what, attack):
    server.set(names.CLAIMED_KEY.format(host=B, task_id="7a0c"), 1)
    with pytest.raises(redis.exceptions.NoPermissionError):
        attack(as_a)
    assert server.ping() and server.get(names.CLAIMED_KEY.format(host=B, task_id="7a0c"))


def test_a_script_it_may_load_runs_with_its_own_rights_only(isolated, as_a, server):
    """EVALSHA and SCRIPT LOAD are allowed (the restore sweep's lock is released by a script):
    Redis checks each command a script runs against the caller's user."""
    script = as_a.script_load("return redis.call('flushall')")
    server.set("cmdb:cancelled:kept", 1)
    with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):
        as_a.evalsha(script, 0)
    assert server.exists("cmdb:cancelled:kept")


def test_without_a_user_the_broker_answers_nothing(isolated):
    """The aclfile switches Redis' default user (no password, every right) off."""
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=isolated["port"]).ping()


def test_a_hosts_password_is_changed_and_its_sessions_ended_without_touching_the_others(
    isolated, server
):
    """Rotation as deploy/BROKER.md says: ACL SETUSER with the new line, CLIENT KILL USER."""

    def sessions_of(user: str) -> int:
        return sum(client["user"] == user for client in server.client_list())

    old = redis.Redis.from_url(isolated["urls"][USER_B])
    assert old.exists(names.CANCELLED_KEY.format(task_id="x")) == 0  # a session, old password
    agent_sessions = sessions_of(USER_A)

    setuser, urls = broker_acl({}, B, "--setuser", "--broker", isolated["address"])
    assert server.execute_command(*setuser.split()) == b"OK"
    assert server.execute_command("CLIENT", "KILL", "USER", USER_B) >= 1

    with pytest.raises(redis.exceptions.ConnectionError):
        old.ping()  # its session is gone, and its password opens no new one
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(isolated["urls"][USER_B]).ping()
    new = redis.Redis.from_url(urls[USER_B])
    assert new.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        new.lrange(A, 0, -1)  # the same rights as before, no more
    assert sessions_of(USER_A) == agent_sessions > 0  # A's agent was not disturbed


def test_the_command_makes_users_for_accepted_hosts_only(process_env):
    make_host(A)
    make_host("127.0.1.112", key=False)  # no key yet: nothing to make a user for

    acl, urls = broker_acl(process_env, "--all", "--broker", "rediss://broker.example:6380/3")

    assert [line.split()[1] for line in acl.splitlines()] == [USER_A]
    assert "&/3.celeryev/worker.*" in acl.split()  # the database the URL names
    assert urlsplit(urls[USER_A]).hostname == "broker.example"
    assert urls[USER_A].startswith(f"rediss://{USER_A}:")
    password = urlsplit(urls[USER_A]).password
    assert password not in acl and len(password) >= 32  # Redis keeps only its sha256


def test_the_rules_name_the_hosts_own_keys_exactly():
    rules = transport.agent_acl_rules("10.0.3.5", "cmdb.central", "cmdb.central.results")
    keys = [rule for rule in rules if "~" in rule]
    # 10.0.3.5 must not match 10.0.3.55's keys: no pattern ends in a bare host prefix.
    assert "~10.0.3.5" in keys and not any(k.endswith("10.0.3.5*") for k in keys)
    assert "~cmdb:fetch-*-10.0.3.5:*" in keys and "~cmdb:claimed:10.0.3.5:*" in keys
    assert not any(k.startswith("~_kombu") or k in ("~*", "%R~*") for k in keys)
