"""Results survive the central worker (issue 14): a report an agent published is stored,
whatever dies when. The intake moves each message atomically to a processing list of its own
and deletes that only after the commit (cmdb.jobs.intake)."""

import contextlib
import signal
import time
import uuid

import pytest
from django.conf import settings

from cmdb.celery import app
from cmdb.jobs import intake
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from deploy.local import Fleet
from tests.support.factories import from_host, make_host
from tests.support.fleet import free_port, wait_for
from wire import names
from wire.messages import Outcome, Report, Stream

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

#: Hosts with no agent: the tests sign as them (auto-accepted range, nobody else's).
IPS = [f"127.0.3.{i}" for i in range(1, 21)]


def burst(jobs: int) -> list[tuple[HostTask, dict]]:
    """``jobs`` x len(IPS) pending host tasks and each one's signed ok report."""
    for ip in IPS:
        make_host(ip, with_agent=False)
    out, now = [], time.time()
    for _ in range(jobs):
        job = Job.objects.create(command="echo burst", timeout=60, reach_timeout=600)
        for ip in IPS:
            task = HostTask.objects.create(job=job, host_id=make_host(ip, with_agent=False).pk,
                                           ip=ip, task_id=str(uuid.uuid4()))  # fmt: skip
            report = Report(task_id=task.task_id, outcome=Outcome.OK, exit_code=0,
                            stdout=Stream.text(f"{task.task_id}\n"), started_at=now,
                            finished_at=now, duration=0.0, agent="a@b", agent_pid=1)  # fmt: skip
            out.append((task, from_host(task, report)))
    return out


def publish(url: str, payloads: list[dict]) -> None:
    """As agents do: kombu LPUSHes each onto the results list (pipelined, as a burst)."""
    with app.connection_for_write(url) as conn:
        producer = app.amqp.Producer(conn)
        with producer.batch(max_size=500):
            for payload in payloads:
                app.send_task(names.STORE_RESULT, args=[payload],
                              queue=settings.CMDB["RESULTS_QUEUE"], producer=producer)  # fmt: skip


@contextlib.contextmanager
def broker(url: str):
    with app.connection_for_write(url) as conn:
        yield conn.default_channel.client


def stored_right(tasks: list[HostTask]) -> int:
    rows = HostTask.objects.filter(pk__in=[t.pk for t in tasks])
    return sum(r.state == State.OK and r.stdout_head == f"{r.task_id}\n" for r in rows)


@pytest.fixture
def own_fleet(tmp_path, process_env):
    """A broker and central worker of this test's own: they are killed here."""
    env = {**process_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    fleet = Fleet(tmp_path / "intake", env)
    fleet.start_redis()
    try:
        yield fleet, env["REDIS_URL"]
    finally:
        fleet.stop_all()


def test_killing_the_central_worker_mid_burst_loses_no_result(own_fleet):
    fleet, url = own_fleet
    items = burst(25)  # 500 reports
    fleet.start_central(concurrency=1, name="central-kill")
    publish(url, [p for _, p in items[:50]])
    tasks = [t for t, _ in items]
    wait_for(lambda: stored_right(tasks[:50]) == 50, 60, "the first reports stored")
    publish(url, [p for _, p in items[50:]])
    # Killed while it takes and stores the rest: whatever it held goes back when it restarts.
    time.sleep(0.05)
    fleet.stop("central-kill", signal.SIGKILL, timeout=5)
    fleet.start_central(concurrency=1, name="central-kill")
    wait_for(lambda: stored_right(tasks) == len(tasks), 90, "every report stored")
    with broker(url) as client:
        assert client.llen(settings.CMDB["RESULTS_QUEUE"]) == 0

        def leftovers() -> list:
            return [k for k in client.keys("cmdb:intake:*:processing") if client.llen(k)]

        # A batch leaves its processing list just after its rows are committed: an instant
        # after the last row is seen, the list may still hold it; it must not stay.
        wait_for(lambda: not leftovers(), 45, "the processing lists emptied")


def test_a_dead_workers_taken_batch_is_put_back_by_another(own_fleet):
    """A central worker that died and never came back: its lease runs out, and the live one
    stores what it had taken."""
    fleet, url = own_fleet
    items = burst(1)
    fleet.start_central(concurrency=1, name="central-live")
    ghost = intake.Keys(settings.CMDB["RESULTS_QUEUE"], "central-ghost@nowhere")
    # Exactly as kombu would have put them on the results list, then moved by the ghost.
    publish(url, [p for _, p in items])
    with broker(url) as client:
        client.sadd(intake.CONSUMERS_KEY, ghost.consumer)
        # The live worker may already have taken some; the ghost takes whatever is left.
        while client.lmove(ghost.queue, ghost.processing, "RIGHT", "LEFT"):
            pass
    tasks = [t for t, _ in items]
    wait_for(lambda: stored_right(tasks) == len(tasks), intake.RECLAIM_EVERY + 30,
             "the ghost's batch stored")  # fmt: skip
    with broker(url) as client:
        assert client.llen(ghost.processing) == 0
        assert not client.sismember(intake.CONSUMERS_KEY, ghost.consumer)


def test_what_is_not_a_task_message_is_dropped_and_the_rest_stored(own_fleet):
    fleet, url = own_fleet
    items = burst(1)
    fleet.start_central(concurrency=1, name="central-junk")
    with broker(url) as client:
        for junk in (b"not json", b'{"headers": 1}', b'{"body": "x", "content-type": "x"}'):
            client.lpush(settings.CMDB["RESULTS_QUEUE"], junk)
    publish(url, [p for _, p in items])
    tasks = [t for t, _ in items]
    wait_for(lambda: stored_right(tasks) == len(tasks), 60, "the reports after the junk")
    log = (fleet.logs / "central-junk.log").read_text()
    assert log.count("dropping an undecodable message") == 3


def test_decode_says_what_is_wrong():
    with pytest.raises(ValueError, match="not a task message"):
        intake.decode(b'{"headers": {}, "properties": {}, "content-type": "application/json"}')
    with pytest.raises(ValueError, match="not JSON"):
        intake.decode(b'{"headers": {}, "properties": {}, "body": "", "content-type": "x"}')


# --- one round of the intake, in this process, on the suite's broker --------------------------
@pytest.fixture
def own_queue(redis_url):
    """A results list nobody else consumes, and an intake for it that no thread runs."""
    queue = f"test.results.{uuid.uuid4().hex[:8]}"
    one = intake.Intake(app, intake.consumer_name("test@here"), queue)
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        yield one, client, queue
        client.delete(queue, one.keys.processing, intake.DEAD_KEY)


def push(client, queue: str, payloads: list[dict]) -> None:
    with app.connection_for_write() as conn:
        producer = app.amqp.Producer(conn)
        for payload in payloads:
            app.send_task(names.STORE_RESULT, args=[payload], queue=queue, producer=producer)


@pytest.mark.django_db(transaction=True)
def test_a_database_that_refuses_every_write_gets_the_batch_back(own_queue, monkeypatch):
    from django.db import InternalError

    one, client, queue = own_queue
    items = burst(1)[:3]
    push(client, queue, [p for _, p in items])

    def refuse(raws):
        raise InternalError("cannot execute UPDATE in a read-only transaction")

    monkeypatch.setattr(intake, "BACKOFF", 0)
    monkeypatch.setattr(intake, "store", refuse)
    assert one.round(client) == 0
    assert client.llen(queue) == 3 and client.llen(one.keys.processing) == 0
    assert client.llen(intake.DEAD_KEY) == 0

    monkeypatch.undo()
    assert one.round(client) == 3
    assert stored_right([t for t, _ in items]) == 3


@pytest.mark.django_db(transaction=True)
def test_a_message_that_alone_cannot_be_stored_is_kept_aside_not_dropped(own_queue, monkeypatch):
    one, client, queue = own_queue
    items = burst(1)[:3]
    push(client, queue, [p for _, p in items])
    poison = items[1][0].task_id
    real_store = intake.store

    def store(raws):
        if any(poison.encode() in intake.base64.b64decode(intake.json.loads(r)["body"])
               for r in raws):  # fmt: skip
            raise RuntimeError("a bug that this one message trips")
        real_store(raws)

    monkeypatch.setattr(intake, "store", store)
    assert one.round(client) == 2
    assert stored_right([items[0][0], items[2][0]]) == 2
    [kept] = client.lrange(intake.DEAD_KEY, 0, -1)
    assert poison.encode() in intake.base64.b64decode(intake.json.loads(kept)["body"])
    assert client.llen(one.keys.processing) == 0


def test_an_intake_of_this_machine_whose_process_is_gone_is_known_dead():
    me = intake.consumer_name("central@x")
    assert not intake.known_dead(me)
    node, host, pid, started = me.rsplit(":", 3)
    assert intake.known_dead(f"{node}:{host}:{pid}:{int(started) - 100}")  # the pid reused
    assert not intake.known_dead(f"{node}:elsewhere:{pid}:1")  # another machine: its lease says
    assert not intake.known_dead("central-ghost@nowhere")
