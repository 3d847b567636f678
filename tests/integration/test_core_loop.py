"""The everyday loop through real Redis, a real central worker and real agent processes."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from django.conf import settings
from django_celery_results.models import TaskResult

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.cli import ID_LINE, dispatch, wait_job, wait_state
from tests.support.factories import from_host, make_host, signed_headers
from tests.support.fleet import (
    AGENT_IPS,
    ROOT,
    dropped_counts,
    free_port,
    ping_nodes,
    remember_keys,
    wait_dropped,
    wait_for,
)
from wire.messages import VERSION, CommandSpec, Outcome

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(fleet):
    return [make_host(ip) for ip in AGENT_IPS]


def own_agent(fleet, ip: str):
    """An agent of the test's own (one pool process), answering, and its host made with the
    key it registered: the test may kill it."""
    from cmdb.celery import app

    agent = fleet.start_agent(ip, concurrency=1)
    wait_for(lambda: ping_nodes(app, [f"agent@{ip}"]), 60, f"the agent of {ip}", interval=0.5)
    remember_keys(fleet, [ip])  # the host made next is that agent's, with its key
    make_host(ip)
    return agent


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_run_then_check_task_prints_each_hosts_output(manage, hosts):
    out = manage("run", "df -h", "--hosts", *AGENT_IPS)
    assert out.returncode == 0, out.stderr
    job_id = ID_LINE.search(out.stdout).group(1)

    # A block per host (alike outputs are grouped by default).
    check = manage("check_task", job_id, "--wait", "--wait-timeout", "60", "--no-group")

    assert check.returncode == 0, check.stdout + check.stderr
    for ip in AGENT_IPS:
        assert re.search(
            rf"^from host {re.escape(ip)}  \(ok, exit 0, [\d.]+ s\)$", check.stdout, re.M
        )
    assert check.stdout.count("Filesystem") == 2
    # Every per-host task id has its django-celery-results row, and AsyncResult agrees.
    from cmdb.celery import app

    for task in HostTask.objects.filter(job_id=job_id):
        assert TaskResult.objects.get(task_id=task.task_id).status == "SUCCESS"
        result = app.AsyncResult(task.task_id)
        assert result.state == "SUCCESS"
        assert result.result["exit_code"] == 0


def test_check_task_takes_a_per_host_task_id(manage, hosts):
    job_id = dispatch(manage, "hostname", AGENT_IPS[0])
    wait_job(manage, job_id)
    task_id = HostTask.objects.get(job_id=job_id).task_id

    out = manage("check_task", task_id, "--json")

    data = json.loads(out.stdout)
    assert out.returncode == 0
    # A host task's id shows that host task, as GET /api/host-tasks/<id>/ does.
    assert data["task_id"] == task_id and data["url"] == f"/api/host-tasks/{task_id}/"
    assert data["stdout"]["head"].strip()


def test_nonzero_exit_is_a_failed_result_not_an_error(manage, hosts):
    job_id = dispatch(manage, "echo out; echo oops >&2; exit 3", AGENT_IPS[0])

    data, code = wait_job(manage, job_id)

    host = data["tasks"][0]
    assert code == 1
    assert (host["state"], host["exit_code"]) == (State.FAILED, 3)
    assert host["stdout"]["head"] == "out\n"
    assert host["stderr"]["head"] == "oops\n"


def test_megabyte_output_keeps_head_tail_and_true_size(manage, hosts):
    # 1,100,000 bytes: lines numbered so head and tail can be checked exactly.
    script = "import sys\nfor i in range(100000): sys.stdout.write(f'{i:010d}\\n')"
    command = f'{sys.executable} -c "{script}"'
    job_id = dispatch(manage, command, AGENT_IPS[0])

    data, code = wait_job(manage, job_id)

    out = data["tasks"][0]["stdout"]
    expected = "".join(f"{i:010d}\n" for i in range(100000))
    assert code == 0
    assert out["bytes"] == len(expected) == 1_100_000
    assert out["truncated"] is True
    assert out["head"] == expected[:65536]
    assert out["tail"] == expected[-65536:]
    text = manage("check_task", job_id).stdout
    assert "output truncated: 1,100,000 bytes in all" in text


def test_hundred_megabyte_output_is_counted_not_kept(manage, hosts):
    job_id = dispatch(manage, "head -c 100000000 /dev/zero | tr '\\0' a", AGENT_IPS[1])

    data, code = wait_job(manage, job_id, timeout=120)

    out = data["tasks"][0]["stdout"]
    assert code == 0
    assert out["bytes"] == 100_000_000
    assert len(out["head"]) == len(out["tail"]) == 65536


def test_bytes_that_are_not_utf8_are_replaced_not_fatal(manage, hosts):
    job_id = dispatch(manage, r"printf 'caf\351 \377\376 ok\n'", AGENT_IPS[0])

    data, code = wait_job(manage, job_id)

    assert code == 0
    assert data["tasks"][0]["stdout"]["head"] == "caf\ufffd \ufffd\ufffd ok\n"


def test_timeout_kills_the_command_and_its_grandchildren(manage, hosts, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    command = f"sh -c 'sleep 300 & echo $! > {pidfile}; wait'"
    job_id = dispatch(manage, command, AGENT_IPS[0], extra=["--timeout", "2"])

    data, code = wait_job(manage, job_id)

    host = data["tasks"][0]
    assert code == 1
    assert host["state"] == State.TIMEOUT
    assert "timed out after 2" in host["error"]
    assert pid_gone(int(pidfile.read_text()))
    # The agent keeps serving after killing a command.
    again = dispatch(manage, "echo still here", AGENT_IPS[0])
    assert wait_job(manage, again)[0]["tasks"][0]["stdout"]["head"] == "still here\n"


def test_cancel_stops_a_running_command_and_keeps_its_output(manage, hosts, tmp_path):
    pidfile = tmp_path / "sleep.pid"
    job_id = dispatch(manage, f"echo started; sleep 120 & echo $! > {pidfile}; wait", AGENT_IPS[1])
    task = HostTask.objects.get(job_id=job_id)
    wait_state(task.task_id, {State.RUNNING})
    wait_for(pidfile.exists, 10, "the command to write its pid")

    out = manage("cancel", job_id)

    assert out.returncode == 0, out.stderr
    assert "cancel sent to 1" in out.stdout
    task = wait_state(task.task_id, {State.CANCELLED}, timeout=20)
    assert task.stdout_head == "started\n"
    assert pid_gone(int(pidfile.read_text()))
    assert TaskResult.objects.get(task_id=task.task_id).status == "REVOKED"


def test_cancel_of_a_task_no_agent_has_taken_ends_it_at_once(manage, fleet):
    make_host("127.0.1.77", with_agent=False)
    job_id = dispatch(manage, "echo never", "127.0.1.77")

    out = manage("cancel", job_id)

    assert out.returncode == 0
    task = HostTask.objects.get(job_id=job_id)
    assert task.state == State.CANCELLED
    assert manage("cancel", job_id).stdout.startswith("nothing to cancel")


def test_malformed_and_unknown_hosts_dispatch_nothing(manage, hosts):
    out = manage(
        "run", "uptime", "--hosts", AGENT_IPS[0], "10.0.3", "999.1.1.1", "127.0.9.9", "no-such-host"
    )

    assert out.returncode == 2
    for text in [
        "malformed IP address: '10.0.3'",
        "malformed IP address: '999.1.1.1'",
        "unknown host 127.0.9.9",
        "unknown host 'no-such-host'",
    ]:
        assert text in out.stderr
    assert not Job.objects.exists()


def test_empty_command_is_refused(manage, hosts):
    out = manage("run", "   ", "--hosts", AGENT_IPS[0])

    assert out.returncode == 2
    assert "the command is empty" in out.stderr
    assert not Job.objects.exists()


def test_broker_down_at_dispatch_is_a_quick_clear_error(manage, hosts):
    dead = f"redis://127.0.0.1:{free_port()}/0"

    out = manage("run", "uptime", "--hosts", *AGENT_IPS, env={"REDIS_URL": dead})

    assert out.returncode == 3, out.stdout + out.stderr
    assert "broker unreachable" in out.stderr
    assert out.elapsed < 30  # a hang check, not a speed test
    job = Job.objects.get()
    assert "broker unreachable" in job.dispatch_error
    assert set(job.host_tasks.values_list("state", flat=True)) == {State.ERROR}
    assert manage("check_task", str(job.id)).returncode == 1


def test_known_host_without_agent_ends_unreachable(manage, fleet):
    make_host("127.0.1.99", with_agent=False)
    job_id = dispatch(manage, "uptime", "127.0.1.99", extra=["--reach-timeout", "2"])

    data, code = wait_job(manage, job_id, timeout=30)

    host = data["tasks"][0]
    assert code == 1
    assert host["state"] == State.UNREACHABLE
    assert "is the agent for 127.0.1.99 running?" in host["error"]
    # If the agent turns up late after all, it finds the task cancelled and does not run it.
    from cmdb.celery import app
    from wire import names

    with app.connection_for_write() as conn:
        key = names.CANCELLED_KEY.format(task_id=host["task_id"])
        assert conn.default_channel.client.exists(key)
    assert TaskResult.objects.get(task_id=host["task_id"]).status == "FAILURE"
    # Provably never delivered: its message was taken out of the queue, and the server holds
    # its run-once claim, which an agent finds taken and then refuses.
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        assert client.llen("127.0.1.99") == 0
        claim = names.CLAIMED_KEY.format(host="127.0.1.99", task_id=host["task_id"])
        assert client.get(claim) == names.CLAIMED_BY_SERVER.encode()


def test_an_agent_frozen_past_the_reach_deadline_never_runs_the_task(manage, fleet, tmp_path):
    """SIGSTOP: the message is in the queue, or already handed to the frozen agent's connection
    (a BRPOP that was waiting). At the deadline the server takes it out or, failing that, takes
    its claim; the thawed agent finds nothing to run or a claim taken, and refuses."""
    from cmdb.celery import app

    ip = "127.0.1.53"
    agent = own_agent(fleet, ip)
    marker = tmp_path / "ran"
    os.killpg(agent.pid, signal.SIGSTOP)
    try:
        job_id = dispatch(manage, f"touch {marker}", ip, extra=["--reach-timeout", "2"])
        task = wait_state(HostTask.objects.get(job_id=job_id).task_id, {State.UNREACHABLE},
                          timeout=30)  # fmt: skip
    finally:
        os.killpg(agent.pid, signal.SIGCONT)
    assert "will not run now" in task.error or "will never run" in task.error
    wait_for(lambda: ping_nodes(app, [f"agent@{ip}"]), 30, "the thawed agent", interval=0.5)
    time.sleep(2)
    task.refresh_from_db()
    assert task.state == State.UNREACHABLE and not marker.exists()
    fleet.stop(f"agent-{ip}")


def test_agent_killed_mid_command_ends_lost(manage, fleet, tmp_path):

    ip = "127.0.1.50"
    agent = own_agent(fleet, ip)
    pidfile = tmp_path / "cmd.pid"
    job_id = dispatch(manage, f"echo $$ > {pidfile}; sleep 60", ip)
    task = HostTask.objects.get(job_id=job_id)
    wait_state(task.task_id, {State.RUNNING})

    command = psutil.Process(int(wait_for(pidfile.read_text, 10, "the command's pid")))

    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    killed = time.monotonic()

    task = wait_state(task.task_id, {State.LOST}, timeout=30)
    # A hang check (the suite's lost_after is 6 s): `make faults` measures the default's.
    assert time.monotonic() - killed < 25
    assert "stopped sending heartbeats" in task.error and "may still be running" in task.error
    assert TaskResult.objects.get(task_id=task.task_id).status == "FAILURE"
    # The command had its own session: it outlived its agent. The next agent ends it.
    assert command.is_running()
    fleet.start_agent(ip, concurrency=1)
    try:
        wait_for(lambda: not _alive(command), 60, "the restarted agent to kill the orphan")
        task = wait_for(lambda: HostTask.objects.filter(pk=task.pk, error__contains="killed what")
                        .first(), 30, "the restarted agent's word")  # fmt: skip
        assert task.state == State.LOST and "the restarted agent killed" in task.error
    finally:
        with contextlib.suppress(psutil.Error):
            command.kill()
        fleet.stop(f"agent-{ip}")


def test_message_for_another_host_is_refused_by_the_agent(fleet, hosts, tmp_path):
    """A message validly signed for one host, re-targeted to another host's queue, must not
    run there: the signature binds it to the queue it was signed for. The other host's word
    on it ends nothing: a host speaks only for its own tasks."""
    from cmdb.celery import app
    from wire import names

    marker = tmp_path / "ran"
    job = Job.objects.create(command=f"touch {marker}", timeout=5, reach_timeout=30)
    task = HostTask.objects.create(job=job, host=hosts[0], ip=AGENT_IPS[0], task_id="t-" + "1" * 34)
    spec = CommandSpec(job=str(job.id), host=AGENT_IPS[0], command=job.command, timeout=5).to_wire()

    before = dropped_counts()
    app.send_task(
        names.RUN_COMMAND,
        args=[spec],
        queue=AGENT_IPS[1],
        task_id=task.task_id,
        headers=signed_headers(names.RUN_COMMAND, AGENT_IPS[0], task.task_id, spec),
        link=app.signature(names.STORE_RESULT, queue=settings.CMDB["CENTRAL_QUEUE"]),
    )

    wait_dropped("report: names another host than its task's", before)
    task.refresh_from_db()
    assert task.state == State.PENDING and not marker.exists()


def test_check_task_of_an_unknown_id_says_so(manage, fleet):
    out = manage("check_task", "00000000-0000-0000-0000-000000000000")

    assert out.returncode == 2
    assert "no job or host task has the id" in out.stderr


def test_run_prints_its_id_without_waiting_for_hosts(manage, fleet):
    make_host("127.0.1.98", with_agent=False)

    out = manage("run", "sleep 30", "--hosts", "127.0.1.98")

    assert out.returncode == 0
    assert ID_LINE.search(out.stdout)
    assert HostTask.objects.get().state == State.PENDING


def test_workers_package_imports_without_django():
    # Make `import django` fail, as on a host where it is not installed (kombu tries it).
    code = (
        "import sys; sys.modules['django'] = None\n"
        "import workers, workers.tasks, workers.__main__\n"
        "workers.celery.app.loader.import_default_modules()\n"
        "assert not any(m.startswith('cmdb') for m in sys.modules), 'cmdb imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def _send_raw(app, task_id: str, ip: str, command: str, job: Job):
    from wire import names

    spec = CommandSpec(job=str(job.id), host=ip, command=command, timeout=10).to_wire()
    app.send_task(
        names.RUN_COMMAND,
        args=[spec],
        queue=ip,
        task_id=task_id,
        headers=signed_headers(names.RUN_COMMAND, ip, task_id, spec),
        link=app.signature(names.STORE_RESULT, queue=settings.CMDB["RESULTS_QUEUE"]),
    )


def _claim_refusals(fleet) -> int:
    return (fleet.logs / "central.log").read_text().count("refused a duplicate of dup-")


def test_a_second_delivery_of_a_task_is_refused_and_changes_nothing(fleet, hosts, tmp_path):
    from cmdb.celery import app

    log = tmp_path / "runs"
    job = Job.objects.create(command=f"echo ran >> {log}", timeout=10, reach_timeout=30)
    task = HostTask.objects.create(
        job=job, host=hosts[0], ip=AGENT_IPS[0], task_id="dup-" + "2" * 32
    )
    _send_raw(app, task.task_id, AGENT_IPS[0], job.command, job)
    wait_state(task.task_id, {State.OK})

    _send_raw(app, task.task_id, AGENT_IPS[0], job.command, job)  # a replay of the same id
    # The agent answers the replay with a refusal, which the central worker logs and drops.
    wait_for(lambda: _claim_refusals(fleet) > 0, 20, "the agent to refuse the replay")
    # Whoever can write to Redis can delete the claim kept there: the host keeps its own.
    from cmdb.jobs.broker import redis_client
    from wire import names

    with redis_client(app) as client:
        claim = names.CLAIMED_KEY.format(host=AGENT_IPS[0], task_id=task.task_id)
        assert client.delete(claim) == 1
    _send_raw(app, task.task_id, AGENT_IPS[0], job.command, job)
    wait_for(lambda: _claim_refusals(fleet) > 1, 20, "the agent to refuse the second replay")

    assert log.read_text() == "ran\n"
    assert HostTask.objects.get(pk=task.pk).state == State.OK


def test_a_malformed_report_does_not_hold_up_the_others(fleet, hosts):
    from cmdb.celery import app
    from wire import names

    job = Job.objects.create(command="x", timeout=10, reach_timeout=30)
    good, bad = (
        # Within HostTask.task_id's 36 characters (PostgreSQL refuses a longer one).
        HostTask.objects.create(job=job, ip=ip, task_id=f"{n}-" + "3" * 31)
        for n, ip in (("good", AGENT_IPS[0]), ("bad", AGENT_IPS[1]))
    )
    now = time.time()
    stream = {"head": "nul\x00byte\n", "tail": "", "total_bytes": 9, "truncated": False}
    reports = [
        {
            "v": VERSION,
            "task_id": bad.task_id,
            "outcome": Outcome.OK,
            "started_at": "not a time",
            "stdout": 7,
        },
        {
            "v": VERSION,
            "task_id": good.task_id,
            "outcome": Outcome.OK,
            "exit_code": 0,
            "stdout": stream,
            "started_at": now,
            "finished_at": now,
            "duration": 0.1,
        },
    ]
    with app.producer_or_acquire() as producer:
        for task, report in zip((bad, good), reports, strict=True):
            app.send_task(
                names.STORE_RESULT,
                args=[from_host(task, report)],
                queue=settings.CMDB["RESULTS_QUEUE"],
                producer=producer,
            )

    stored = wait_state(good.task_id, {State.OK})
    assert stored.stdout_head == "nul\ufffdbyte\n"
    assert HostTask.objects.get(pk=bad.pk).state == State.PENDING


def test_dispatch_refuses_to_run_inside_a_transaction(fleet, hosts):
    from django.db import transaction

    from cmdb.celery import app
    from cmdb.jobs.dispatch import CommandRequest, dispatch_command

    with pytest.raises(RuntimeError), transaction.atomic():
        dispatch_command(CommandRequest("true", [AGENT_IPS[0]]), app)
    assert not Job.objects.exists()


def test_what_a_killed_agent_had_prefetched_runs_once_it_is_back(manage, fleet, tmp_path):
    """kombu keeps a prefetched message unacknowledged for an hour (its visibility timeout);
    the restarted agent gives it back at once (workers.redeliver), and it runs, once."""
    from cmdb.celery import app
    from wire import names

    ip = "127.0.1.52"
    agent = own_agent(fleet, ip)
    marker = tmp_path / "ran"
    busy = dispatch(manage, "sleep 30", ip)
    wait_state(HostTask.objects.get(job_id=busy).task_id, {State.RUNNING})
    waiting = dispatch(manage, f"echo x >> {marker}", ip)
    unacked = names.UNACKED_KEYS["unacked_key"].format(host=ip)
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        wait_for(lambda: client.hlen(unacked), 10, "the second message prefetched")
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    fleet.start_agent(ip, concurrency=1)
    try:
        task = wait_state(HostTask.objects.get(job_id=waiting).task_id, {State.OK}, timeout=60)
        assert marker.read_text() == "x\n" and task.exit_code == 0
        lost = wait_state(HostTask.objects.get(job_id=busy).task_id, {State.LOST}, timeout=30)
        assert "killed what was left" in wait_for(
            lambda: HostTask.objects.get(pk=lost.pk).error if "killed" in
            HostTask.objects.get(pk=lost.pk).error else "", 30, "the orphan's end")  # fmt: skip
    finally:
        fleet.stop(f"agent-{ip}")
