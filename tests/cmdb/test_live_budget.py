"""A job's live output in the broker's Redis is bounded (cmdb.jobs.live): `cat /dev/urandom` on
many hosts stops at the job's byte budget, with one "truncated" event; task events still go."""

import uuid

import pytest

from cmdb.celery import app
from cmdb.jobs import live
from cmdb.jobs.broker import redis_client


def output(job, task, n, text="x" * 3000):
    event = {"type": "output", "task": task, "host": "10.0.0.1", "seq": n, "elapsed": 0.1}
    return job, {**event, "stdout_at": n * len(text), "stdout": text, "stderr_at": 0, "stderr": ""}


def events_of(job):
    with live.reader() as client:
        return [e for _, e in live.read(client, job, count=100000)]


def stream_bytes(job):
    with redis_client(app) as client:
        return client.memory_usage(live.events_key(job)) or 0


@pytest.mark.usefixtures("redis_url")
def test_a_jobs_output_events_stop_at_its_budget_and_task_events_go_on(settings):
    settings.CMDB = {**settings.CMDB, "EVENTS_JOB_BYTES": 64 << 10}
    job = uuid.uuid4().hex
    # Four hosts' intakes, in batches, much more than the budget.
    for batch in range(20):
        live.publish([output(job, f"t{h}", batch) for h in range(4)])
    stored = {"job_id": job, "task_id": "t0", "ip": "10.0.0.1", "state": "ok", "exit_code": 0,
              "duration": 0.1}  # fmt: skip
    live.publish_stored([type("T", (), stored)()])

    got = events_of(job)
    shown = sum(len(live.encode(e).encode()) for e in got if e["type"] == "output")
    assert 0 < shown <= 64 << 10
    assert [e["type"] for e in got].count("truncated") == 1
    assert got[-1] == {"type": "task", "task": "t0", "host": "10.0.0.1", "state": "ok",
                       "exit_code": 0, "duration": 0.1}  # fmt: skip
    assert stream_bytes(job) < 200 << 10  # about the budget, not the 80 batches' 960 KB


@pytest.mark.usefixtures("redis_url")
def test_binary_output_is_shown_in_a_few_kib_per_event():
    job = uuid.uuid4().hex
    at, shown = live.shown_of(1000, b"\xff" * (64 << 10))  # `cat /dev/urandom`'s worst
    assert at == 1000 + (64 << 10) - live.SHOW_BYTES
    live.publish([output(job, "t0", 0, shown)])
    (event,) = events_of(job)
    assert event["stdout"] == shown
    # ensure_ascii=False: 3 bytes a replacement character, not json's 6 of "\ufffd" (the 64
    # KiB were 393 KB in the broker before).
    assert len(live.encode(event).encode()) < 3 * live.SHOW_BYTES + 300


@pytest.mark.usefixtures("redis_url")
def test_the_events_answer_names_hosts_from_the_database_and_skips_malformed_events():
    from types import SimpleNamespace

    from cmdb.api import live as api_live

    job = uuid.uuid4().hex
    forged = output(job, "t0", 0, "hello\n")
    forged[1]["host"] = "\x1b[2Jevil"
    live.publish([forged, (job, {"no": "type"}), (job, {"type": "bogus", "task": "t0"}),
                  (job, {"type": "task", "task": "t0"})])  # fmt: skip

    answer = api_live.events_response(SimpleNamespace(pk=job), {"t0": "10.0.0.9"}, set(), True,
                                      "0-0")  # fmt: skip
    body = b"".join(answer.streaming_content).decode()
    assert body.count("event: ") == 2, body  # the output and the task event only
    assert '"host": "10.0.0.9"' in body and "evil" not in body, body


@pytest.mark.django_db(transaction=True)  # streamed answers close the connection when closed
@pytest.mark.usefixtures("redis_url")
def test_a_user_has_a_few_event_streams_at_once_then_429(settings):
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.choices import JobKindChoices
    from cmdb.jobs.models import HostTask, Job
    from tests.support.api import make_user, token_client
    from tests.support.factories import make_host

    settings.CMDB = {**settings.CMDB, "EVENTS_STREAMS_PER_USER": 2}
    job = Job.objects.create(kind=JobKindChoices.COMMAND, command="x", timeout=30,
                             reach_timeout=30)  # fmt: skip
    HostTask.objects.create(job=job, ip="127.0.3.9", host=make_host("127.0.3.9"),
                            task_id=str(uuid.uuid4()), state=State.OK)  # fmt: skip
    user = make_user("jobs.view_job", "jobs.view_hosttask")
    reader, other = token_client(user), token_client(make_user("jobs.view_job"))
    url = f"/api/jobs/{job.pk}/events/"

    first, second = reader.get(url), reader.get(url)  # open, not read yet
    assert (first.status_code, second.status_code) == (200, 200)
    third = reader.get(url)
    assert third.status_code == 429 and b"CMDB_EVENTS_STREAMS_PER_USER" in third.content
    assert other.get(url).status_code == 200  # per user
    first.close()  # read or not, a closed answer gives its slot back
    again = reader.get(url)
    assert again.status_code == 200
    assert b"".join(again.streaming_content).startswith(b"retry:")
    again.close()
    second.close()
