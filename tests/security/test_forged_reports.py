"""Forged reports, notices and heartbeats from a client with broker access (or a host speaking
for another): the server believes only what the accepted key of the task's host signed, drops
and counts the rest, and the real word still counts when it comes."""

import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.management import call_command
from django_celery_results.models import TaskResult

from cmdb.assets.models import Asset
from cmdb.celery import app
from cmdb.jobs import results, services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from tests.support.cli import wait_state
from tests.support.factories import from_host, make_host
from tests.support.fleet import AGENT_IPS, agent_private_key, dropped_counts, wait_dropped
from wire import names
from wire.messages import MAX_CAPTURE_BYTES, Heartbeat, Outcome, Report, Started, Stream

A, B = AGENT_IPS
IP = "127.0.1.95"  # a host with no agent: the tests sign as it


def task_for(kind=JobKindChoices.COMMAND, ip=IP, state=State.PENDING) -> HostTask:
    job = Job.objects.create(kind=kind, command=kind, timeout=30, reach_timeout=30)
    return HostTask.objects.create(job=job, host=make_host(ip, with_agent=False), ip=ip,
                                   task_id=str(uuid.uuid4()), state=state)  # fmt: skip


def ok(task, **fields) -> Report:
    now = time.time()
    return Report(task_id=task.task_id, outcome=Outcome.OK, exit_code=0, started_at=now,
                  finished_at=now, duration=0.0, **fields)  # fmt: skip


def publish_results(*items: dict) -> None:
    with app.producer_or_acquire() as producer:
        for item in items:
            app.send_task(names.STORE_RESULT, args=[item], queue=settings.CMDB["RESULTS_QUEUE"],
                          producer=producer)  # fmt: skip


BAD_KEY = "not signed by the host's accepted key"
OTHER_HOST = "names another host than its task's"
FORGERIES = {
    "unsigned": (lambda task, m: {**m.to_wire(), "host": task.ip}, "unsigned"),
    "another key": (lambda task, m: from_host(task, m, key=Ed25519PrivateKey.generate()), BAD_KEY),
    # Signed by the host, then changed on the way.
    "altered": (lambda task, m: {**from_host(task, m), "exit_code": 1}, BAD_KEY),
    "another host": (lambda task, m: from_host(task, m, host="127.0.1.96"), OTHER_HOST),
}


@pytest.mark.django_db
@pytest.mark.parametrize("forge, reason", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_notice_or_result_moves_nothing_and_is_counted(
    forge, reason, redis_url, capsys, cli_user
):
    task = task_for()
    before = dropped_counts()

    notice, report = Started(task_id=task.task_id), ok(task, stdout=Stream.text("forged"))

    changed = results.store_batch([forge(task, notice)], [forge(task, report)])

    task.refresh_from_db()
    assert changed == 0 and task.state == State.PENDING and task.stdout_head == ""
    after = dropped_counts()
    for kind in ("started notice", "report"):
        assert after.get(f"{kind}: {reason}", 0) == before.get(f"{kind}: {reason}", 0) + 1
    call_command("keys")  # where an operator sees them
    assert f"report: {reason}" in capsys.readouterr().out
    # The host's own word still counts.
    assert results.store_batch([], [from_host(task, ok(task))]) == 1


@pytest.mark.django_db
def test_a_rejected_hosts_reports_are_dropped(redis_url):
    task = task_for()
    task.host.key_state = "rejected"
    task.host.save()

    assert results.store_batch([], [from_host(task, ok(task))]) == 0
    task.refresh_from_db()
    assert task.state == State.PENDING


@pytest.mark.django_db
def test_facts_come_only_from_collections(redis_url):
    facts = {"facts": {"system": {"hostname": "evil", "os": "Forged OS"}}, "errors": {}}
    command = task_for(JobKindChoices.COMMAND)

    # Signed by the host itself, yet the result of a plain command: its facts are not taken.
    assert results.store_batch([], [from_host(command, ok(command, facts_report=facts))]) == 1
    assert not Asset.objects.filter(host__ip=IP).exists()
    stored = json.loads(TaskResult.objects.get(task_id=command.task_id).result)
    assert stored["facts_report"] is None

    collect = task_for(JobKindChoices.COLLECT)
    assert results.store_batch([], [from_host(collect, ok(collect, facts_report=facts))]) == 1
    assert Asset.objects.filter(host__ip=IP).exists()


@pytest.mark.django_db
def test_what_a_host_sends_is_cut_to_what_the_server_keeps(redis_url):
    task = task_for()
    huge = "x" * (20 << 20)
    stream = Stream(head=huge, tail="é" * (1 << 20), total_bytes=40 << 20, truncated=False)
    report = ok(task, stdout=stream, error="e" * (1 << 20), agent="a" * 10_000,
                traceback="t" * (1 << 20))  # fmt: skip

    assert results.store_batch([], [from_host(task, report)]) == 1

    task.refresh_from_db()
    assert len(task.stdout_head.encode()) == MAX_CAPTURE_BYTES and task.stdout_truncated
    assert len(task.stdout_tail.encode()) <= MAX_CAPTURE_BYTES  # cut on a character
    assert task.stdout_bytes == 40 << 20
    assert len(task.error) == results.MAX_TEXT and len(task.agent) == results.MAX_NAME
    result = TaskResult.objects.get(task_id=task.task_id)
    # Both cut parts and the texts, in JSON (which writes each "é" as 6 characters).
    assert len(result.result) < 8 << 20 and len(result.traceback) <= results.MAX_TEXT


@pytest.mark.django_db
@pytest.mark.parametrize("fields", [
    pytest.param({"agent": "a" * 150}, id="agent 150"),
    # Cut on any database (SQLite would keep all 10,000; PostgreSQL refuses past a column).
    pytest.param({"agent": "a" * 10_000}, id="agent 10k"),
    pytest.param({"agent_pid": 2**31}, id="pid"),
])  # fmt: skip
def test_a_started_notice_is_cut_to_what_the_server_keeps(fields, redis_url):
    """A host's own notice with a name or pid the columns cannot hold still begins its task,
    and spoils nothing else in its batch."""
    task, other = task_for(), task_for()

    changed = results.store_batch(
        [
            from_host(task, Started(task_id=task.task_id, **fields)),
            from_host(other, Started(task_id=other.task_id)),
        ],
        [],
    )

    assert changed == 2
    task.refresh_from_db()
    assert task.state == State.RUNNING and len(task.agent) <= results.MAX_NAME


@pytest.mark.django_db
def test_a_report_with_a_pid_past_the_column_is_stored(redis_url):
    task = task_for()
    assert results.store_batch([], [from_host(task, ok(task, agent_pid=2**31))]) == 1
    task.refresh_from_db()
    assert task.state == State.OK


# --- against the real agents and central worker ------------------------------------------------
@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_a_forged_ok_does_not_end_a_real_running_command_before_its_result(fleet):
    """The attack: "ok, exit 0" in the name of a host whose `apt-get upgrade` is running,
    unsigned, signed with another key, and signed by another real host (B) that has been
    taken over. The command's own result ends it."""
    host = make_host(A)
    job = services.run("sleep 3; echo real", services.Targets(hosts=[host.ip], timeout=30), "t")
    task = wait_state(job.host_tasks.get().task_id, {State.RUNNING}, timeout=30)
    before = dropped_counts()
    forged = ok(task, stdout=Stream.text("forged\n"), agent=f"agent@{A}")

    publish_results(
        {**forged.to_wire(), "host": A},
        from_host(task, forged, key=Ed25519PrivateKey.generate()),
        from_host(task, forged, key=agent_private_key(B)),  # B speaking for A
        from_host(task, forged, key=agent_private_key(B), host=B),  # B's report, A's task
    )

    wait_dropped(f"report: {OTHER_HOST}", before)
    task.refresh_from_db()
    assert task.state == State.RUNNING
    done = wait_state(task.task_id, {State.OK, State.ERROR, State.LOST}, timeout=30)
    assert done.state == State.OK and done.stdout_head == "real\n", done.error
    after = dropped_counts()
    assert after["report: unsigned"] > before.get("report: unsigned", 0)
    assert after[f"report: {BAD_KEY}"] >= before.get(f"report: {BAD_KEY}", 0) + 2


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_forged_heartbeats_do_not_make_a_running_command_lost(fleet):
    """Celery's worker-offline and worker-heartbeat (with a new pid, as if the agent had
    restarted) in the agent's name, and our own heartbeat unsigned or signed by another host:
    none of them makes the monitor call the command lost (CMDB_AGENT_LOST_AFTER is 6 s here)."""
    host = make_host(A)
    job = services.run("sleep 9; echo done", services.Targets(hosts=[host.ip], timeout=30), "t")
    task = wait_state(job.host_tasks.get().task_id, {State.RUNNING}, timeout=30)
    before = dropped_counts()
    forged = Heartbeat(hosts=[A], agent=f"agent@{A}", agent_pid=1, at=time.time() + 60)

    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname=f"agent@{A}", enabled=True)
        dispatcher.pid = 1  # as if the agent had restarted
        for _ in range(3):
            dispatcher.send("worker-heartbeat")
            dispatcher.send("worker-offline")
            dispatcher.send(names.HEARTBEAT_EVENT, heartbeat={**forged.to_wire(), "offline": True})
            dispatcher.send(names.HEARTBEAT_EVENT,
                            heartbeat=forged.signed(agent_private_key(B)).to_wire())  # fmt: skip
            time.sleep(1)
        dispatcher.close()

    done = wait_state(task.task_id, {State.OK, State.LOST, State.ERROR}, timeout=30)
    assert done.state == State.OK and done.stdout_head == "done\n", done.error
    # Dropped and counted once the monitor flushes its counts (every 5 s).
    wait_dropped(f"heartbeat: {BAD_KEY}", before)
    assert dropped_counts()["heartbeat: unsigned"] > before.get("heartbeat: unsigned", 0)


@pytest.mark.django_db
def test_a_task_id_that_is_no_string_costs_only_its_own_message(redis_url):
    task = task_for()
    before = dropped_counts()

    assert results.store_batch([{"task_id": ["x"]}], [{"task_id": {"a": 1}}, "nonsense",
                                                      from_host(task, ok(task))]) == 1  # fmt: skip

    assert dropped_counts()["report: malformed"] > before.get("report: malformed", 0)


@pytest.mark.django_db
def test_a_started_notice_sent_again_does_not_bring_a_lost_task_back(redis_url):
    task = task_for()
    notice = from_host(task, Started(task_id=task.task_id, agent=f"agent@{IP}"))
    assert results.store_batch([notice], []) == 1
    HostTask.objects.filter(pk=task.pk).update(state=State.LOST, error="gone")

    assert results.store_batch([notice], []) == 0  # a captured one, sent again

    task.refresh_from_db()
    assert (task.state, task.error) == (State.LOST, "gone")


@pytest.mark.django_db
def test_a_report_passed_off_as_a_started_notice_is_not_believed(redis_url):
    task = task_for()
    report = from_host(task, ok(task))

    assert results.store_batch([report], []) == 0

    task.refresh_from_db()
    assert task.state == State.PENDING


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_poison_on_the_results_queue_and_the_event_bus_stops_nothing(fleet):
    """An undecodable message on the results queue (kombu raises on it, and used to stop the
    central worker for good), and events Celery's receiver cannot read (it reconnected after
    each, missing real heartbeats): a command running meanwhile still ends ok, not lost."""
    from kombu import Exchange, Producer

    host = make_host(A)
    job = services.run("sleep 8; echo done", services.Targets(hosts=[host.ip], timeout=30), "t")
    task = wait_state(job.host_tasks.get().task_id, {State.RUNNING}, timeout=30)

    with app.connection_for_write() as conn:
        producer = Producer(conn.default_channel)
        producer.publish({"__type__": "nope", "__value__": 1}, routing_key=settings.CMDB[
            "RESULTS_QUEUE"], serializer="json")  # fmt: skip
        events = Exchange("celeryev", type="topic")
        for _ in range(200):
            producer.publish([{"type": "worker-x"}, {"type": ["poison"]}], exchange=events,
                             routing_key="worker.heartbeat", serializer="json")  # fmt: skip
            time.sleep(0.04)

    done = wait_state(task.task_id, {State.OK, State.LOST, State.ERROR}, timeout=30)
    assert done.state == State.OK and done.stdout_head == "done\n", done.error
