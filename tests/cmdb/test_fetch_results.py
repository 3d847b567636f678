"""Fetch results: the intake hands a received file over, the storing task ends the host task.

A real redis-server (the suite's) holds the blobs; the storing runs here, in-process, as the
central worker's pool would run it.
"""

import hashlib
import io
import os
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from cmdb.files.fetched import remove_expired_fetches
from cmdb.jobs import results
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from tests.support.factories import from_host
from wire import blobs
from wire.messages import Outcome, Report, Stream

pytestmark = pytest.mark.django_db

IP = "127.0.1.90"


@pytest.fixture
def broker(redis_url):
    from cmdb.celery import app
    from cmdb.jobs.broker import redis_client

    with redis_client(app) as client:
        yield client


def fetch_task(kind: str = JobKindChoices.FETCH, state: str = State.STORING) -> HostTask:
    job = Job.objects.create(kind=kind, command=kind, timeout=30, reach_timeout=30,
                             params={"agent": {"path": "/var/log/app.log"}})  # fmt: skip
    return HostTask.objects.create(job=job, ip=IP, task_id=str(uuid.uuid4()), state=state)


def report(task: HostTask, manifest: dict) -> dict:
    return from_host(task, Report(task_id=task.task_id, outcome=Outcome.OK, exit_code=0,
                                  agent=f"agent@{IP}", fetch_manifest=manifest,
                                  stdout=Stream.text("sent")))  # fmt: skip


def test_a_received_file_leaves_the_task_storing_until_it_is_stored(broker, settings, tmp_path):
    settings.CMDB = {**settings.CMDB, "FETCH_DIR": tmp_path}
    task = fetch_task(state=State.RUNNING)
    content = b"line\n" * 1000
    manifest = blobs.put_blob(broker, io.BytesIO(content), namespace=f"fetch-{task.job_id}-{IP}")
    payload = report(task, manifest)

    # As the intake stores it (the storing task is queued on the suite's broker, unconsumed).
    assert results.store_batch([], [payload]) == 1

    task.refresh_from_db()
    assert task.state == State.STORING and task.fetched is None
    # The storing phase is timed by the server's clock (the agent's may be off).
    assert (timezone.now() - task.started_at).total_seconds() < 5
    assert task.stdout_head.startswith(f"received {len(content)} bytes")

    results.finish_fetch(task.task_id, payload)  # what the central worker's pool runs

    task.refresh_from_db()
    stored = tmp_path / str(task.job_id) / IP / "app.log"
    assert task.state == State.OK and stored.read_bytes() == content
    assert task.fetched == {"path": str(stored), "size": len(content),
                            "sha256": hashlib.sha256(content).hexdigest()}  # fmt: skip
    assert not broker.exists(f"cmdb:{manifest['namespace']}:{manifest['sha256']}:meta")
    # A second delivery of the same result changes nothing.
    results.finish_fetch(task.task_id, payload)
    task.refresh_from_db()
    assert task.state == State.OK and task.fetched["path"] == str(stored)


@pytest.mark.parametrize("kind", [JobKindChoices.FETCH, JobKindChoices.PUSH])
def test_a_manifest_naming_another_blob_is_refused_and_the_blob_kept(broker, kind):
    task = fetch_task(kind)
    # A push's blob: a forged report must not make the server copy it, then delete it.
    manifest = blobs.put_blob(broker, io.BytesIO(b"someone else's file"))

    results.finish_fetch(task.task_id, report(task, manifest))

    task.refresh_from_db()
    assert task.state == State.ERROR and task.error == results.E_FORGED_FETCH
    assert task.fetched is None
    assert broker.exists(f"cmdb:blob:{manifest['sha256']}:meta")


def test_a_cancelled_fetch_is_not_stored_and_its_blob_goes(broker):
    task = fetch_task(state=State.CANCELLED)
    manifest = blobs.put_blob(broker, io.BytesIO(b"late"), namespace=f"fetch-{task.job_id}-{IP}")

    results.finish_fetch(task.task_id, report(task, manifest))

    task.refresh_from_db()
    assert task.state == State.CANCELLED and task.fetched is None
    assert not broker.exists(f"cmdb:{manifest['namespace']}:{manifest['sha256']}:meta")


def test_copies_past_their_keeping_time_are_removed_not_the_operators_own(tmp_path):
    fetch_dir, elsewhere, now = tmp_path / "fetched", tmp_path / "logs", timezone.now()

    def fetched(folder, days_ago: float) -> HostTask:
        task = fetch_task(state=State.OK)
        path = folder / str(task.job_id) / IP / "app.log"
        path.parent.mkdir(parents=True)
        path.write_text("log\n")
        task.fetched = {"path": str(path), "sha256": "0" * 64, "size": 4}
        task.finished_at = now - timedelta(days=days_ago)
        task.save()
        return task

    old, recent, cli = fetched(fetch_dir, 8), fetched(fetch_dir, 6), fetched(elsewhere, 30)

    assert remove_expired_fetches(fetch_dir, 7, now) == 1
    assert remove_expired_fetches(fetch_dir, 7, now) == 0  # once

    old.refresh_from_db()
    assert old.fetched_removed_at == now
    assert not (fetch_dir / str(old.job_id)).exists()  # its empty folders went too
    for kept in (recent, cli):
        kept.refresh_from_db()
        assert kept.fetched_removed_at is None and os.path.exists(kept.fetched["path"])
    assert remove_expired_fetches(fetch_dir, 0, now + timedelta(days=99)) == 0  # 0: for ever
