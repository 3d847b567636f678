"""Two central workers storing one burst on PostgreSQL: nothing lost, nothing stored twice.

Scale-out is more central workers on one database (DESIGN.md, decision 8). They then take
reports off the same results queue at once, in batches that may hold the same host task (its
started notice in one, its result in the other, a report delivered again), and only the row
locks of cmdb.jobs.results.store_batch keep them apart. SQLite takes one writer at a time
whatever the code does, so this is a PostgreSQL test (`make test`'s second pass).
"""

import random
import re
import socket
import time
import uuid
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django_celery_results.models import TaskResult

from cmdb.celery import app
from cmdb.jobs import services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from deploy.local import Fleet
from tests.support.factories import from_host, make_host
from tests.support.fleet import AGENT_IPS, dropped_counts, ping_nodes, wait_for
from wire import names
from wire.messages import Outcome, Report, Started, Stream

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="two central workers share a database only on PostgreSQL (SQLite lets one "
        "writer in at a time); make test's PostgreSQL pass runs this",
    ),
]

#: Hosts with no agent: the test signs their reports with their keys (factories.from_host).
IPS = [f"127.0.1.{n}" for n in range(70, 76)]
JOBS = 50  # x 6 hosts: 300 host tasks, 900 messages (notice, result, the result again)
#: The line lifecycle.move logs (INFO) when a result comes for a task already ended: a
#: worker that logs one for this burst took part in it.
REFUSED = re.compile(r"host task (\S+): (ok|failed) -> \w+ refused")


@pytest.fixture
def second_central(run_dir, process_env, fleet):
    """A central worker beside the session's, configured alike (its own monitor too)."""
    second = Fleet(run_dir / "central2", process_env)
    second.start_central(name="central2")
    node = f"central2@{socket.gethostname()}"
    wait_for(lambda: ping_nodes(app, [node]), 90, f"{node} to answer pings", interval=0.5)
    yield second
    second.stop_all()


def log_size(fleet: Fleet, name: str) -> int:
    path = fleet.logs / f"{name}.log"
    return path.stat().st_size if path.exists() else 0


def refused_since(fleet: Fleet, name: str, offset: int) -> list[str]:
    """Task ids of the results this worker refused as already stored, logged after ``offset``."""
    with open(fleet.logs / f"{name}.log", "rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    return [m.group(1) for m in REFUSED.finditer(text)]


def publish(items: list[tuple[str, dict]]) -> None:
    queue = settings.CMDB["RESULTS_QUEUE"]
    with app.producer_or_acquire() as producer:
        for task_name, item in items:
            app.send_task(task_name, args=[item], queue=queue, producer=producer)


def wait_all_ended(ids: list[str], timeout: float) -> None:
    def ended():
        active = HostTask.objects.filter(task_id__in=ids, state__in=State.active()).count()
        return active == 0 or None

    wait_for(ended, timeout, f"{len(ids)} host tasks to end", interval=0.5)


def assert_stored_once(ids: list[str]) -> dict[str, TaskResult]:
    """One TaskResult per host task, none for anything else of the burst; returns them."""
    results = TaskResult.objects.filter(task_id__in=ids)
    doubled = results.values("task_id").annotate(n=Count("id")).filter(n__gt=1)
    assert not doubled.exists(), list(doubled)
    by_id = {r.task_id: r for r in results}
    assert set(by_id) == set(ids), f"{len(set(ids) - set(by_id))} host tasks have no TaskResult"
    return by_id


def test_two_central_workers_store_a_burst_of_signed_reports_each_once(fleet, second_central):
    hosts = [make_host(ip, with_agent=False) for ip in IPS]
    tasks = []
    for n in range(JOBS):
        job = Job.objects.create(command=f"burst {n}", timeout=300, reach_timeout=300)
        tasks += [HostTask(job=job, host=h, ip=h.ip, task_id=str(uuid.uuid4())) for h in hosts]
    tasks = HostTask.objects.bulk_create(tasks)
    # Every third exits 1: the state, not only the output, must be the task's own.
    expected = {t.task_id: (i % 3 and 1) or 0 for i, t in enumerate(tasks)}
    items = []
    for task in tasks:
        now = time.time()
        report = Report(task_id=task.task_id, exit_code=expected[task.task_id], started_at=now,
                        finished_at=now, duration=0.01, agent=f"agent@{task.ip}",
                        outcome=Outcome.OK if expected[task.task_id] == 0 else Outcome.FAILED,
                        stdout=Stream.text(f"marker {task.task_id}\n"))  # fmt: skip
        signed = from_host(task, report)
        items += [(names.TASK_STARTED, from_host(task, Started(task_id=task.task_id,
                                                               agent=f"agent@{task.ip}"))),
                  (names.STORE_RESULT, signed),
                  # Delivered again (a central worker died between commit and ack).
                  (names.STORE_RESULT, signed)]  # fmt: skip
    # Notices after their results, copies side by side: the two workers' batches overlap.
    random.Random(14).shuffle(items)
    dropped_before = _not_heartbeats(dropped_counts())
    offsets = {name: log_size(f, name) for f, name in ((fleet, "central"),
                                                       (second_central, "central2"))}  # fmt: skip
    ids = list(expected)

    started = time.monotonic()
    publish(items)
    wait_all_ended(ids, 120)
    elapsed = time.monotonic() - started

    stored = {t.task_id: t for t in HostTask.objects.filter(task_id__in=ids)}
    wrong = {
        i: (t.state, t.exit_code)
        for i, t in stored.items()
        if (t.state, t.exit_code) != ((State.FAILED, 1) if expected[i] else (State.OK, 0))
    }
    assert not wrong, f"{len(wrong)} host tasks ended wrong: {dict(list(wrong.items())[:5])}"
    assert all(t.stdout_head == f"marker {i}\n" for i, t in stored.items())
    results = assert_stored_once(ids)
    assert Counter(r.status for r in results.values()) == {"SUCCESS": len(ids)}
    # Nothing of the burst was taken for a forgery (the reports are all genuine).
    # Heartbeats are left out: the suite's agents beat for hosts other tests removed, all along.
    assert _not_heartbeats(dropped_counts()) == dropped_before
    # Of each result's two copies one was stored and the other refused, by whichever worker
    # got it: every task once, none twice. Both workers took their share of the copies.
    refused = {name: refused_since(f, name, offsets[name])
               for f, name in ((fleet, "central"), (second_central, "central2"))}  # fmt: skip
    assert Counter(refused["central"] + refused["central2"]) == Counter(ids)
    assert all(refused.values()), {name: len(r) for name, r in refused.items()}
    print(f"{len(items)} messages stored by two central workers in {elapsed:.1f} s; copies "
          f"refused: {len(refused['central'])} and {len(refused['central2'])}")  # fmt: skip


def test_two_central_workers_store_a_burst_of_real_host_tasks_each_once(fleet, second_central):
    for ip in AGENT_IPS:
        make_host(ip)
    targets = services.Targets(hosts=list(AGENT_IPS), timeout=60, reach_timeout=120)
    jobs = [
        services.run(f"echo marker-{n}", targets, requested_by="two-central test")
        for n in range(100)
    ]
    tasks = list(HostTask.objects.filter(job__in=jobs))
    assert len(tasks) == 2 * len(jobs)
    ids = [t.task_id for t in tasks]

    wait_all_ended(ids, 240)

    commands = {str(j.pk): j.command for j in jobs}
    stored = HostTask.objects.filter(task_id__in=ids)
    wrong = [(t.ip, t.state, t.exit_code, t.error) for t in stored
             if t.state != State.OK or t.exit_code != 0]  # fmt: skip
    assert not wrong, wrong[:5]
    for task in stored:
        n = re.search(r"marker-(\d+)", commands[str(task.job_id)]).group(1)
        assert task.stdout_head == f"marker-{n}\n", (task.task_id, task.stdout_head)
    assert_stored_once(ids)


def _not_heartbeats(counts: dict) -> dict:
    return {reason: n for reason, n in counts.items() if not reason.startswith("heartbeat")}
