"""The broker's memory is the whole fleet's: a fetch may not bring more than CMDB_MAX_FETCH_BYTES
into it, whatever the host says, and a file that grows while it is read is no way around it."""

import io
import uuid

import pytest

from cmdb.celery import app
from cmdb.jobs import results, services
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from tests.support.cli import wait_state
from tests.support.factories import from_host
from tests.support.fleet import rooted_agents
from wire import blobs, names
from wire.messages import Report, Stream

IP = "127.0.1.65"  # not test_deploy's (two agents on one IP would confuse the monitor)


class Growing(io.BytesIO):
    """A log still being written: every read finds more."""

    def read(self, n=-1):
        self.write(b"x" * 4096)
        self.seek(-4096, io.SEEK_CUR)
        return super().read(n)


def test_a_blob_over_its_limit_is_refused_before_anything_is_sent(store):
    with pytest.raises(blobs.TransferError, match="more than 10000 bytes"):
        blobs.put_blob(store, io.BytesIO(b"x" * 10_001), max_bytes=10_000)
    with pytest.raises(blobs.TransferError, match="more than 10000 bytes"):
        blobs.put_blob(store, Growing(b"start"), chunk_size=1024, max_bytes=10_000)
    assert store.keys("cmdb:*") == []


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_a_host_refuses_to_send_a_file_over_the_fetch_limit(fleet, settings, tmp_path):
    from tests.support.factories import make_host

    settings.CMDB = {**settings.CMDB, "MAX_FETCH_BYTES": 1000}
    with rooted_agents(fleet, [IP], tmp_path) as roots:
        make_host(IP)
        (roots[IP] / "big.log").write_bytes(b"x" * 1001)

        job = services.fetch("/big.log", services.Targets(hosts=[IP]), "t")
        done = wait_state(job.host_tasks.get().task_id, {State.ERROR, State.OK}, timeout=60)

    assert done.state == State.ERROR and "more than the 1000 a fetch may bring" in done.error
    with redis_client(app) as client:
        assert client.keys(f"cmdb:{names.fetch_namespace(job.pk, IP)}:*") == []


@pytest.mark.django_db
def test_the_server_does_not_store_a_fetch_over_the_limit_that_comes_anyway(settings, redis_url):
    settings.CMDB = {**settings.CMDB, "MAX_FETCH_BYTES": 1000}
    job = Job.objects.create(kind=JobKindChoices.FETCH, command="fetch", timeout=30,
                             reach_timeout=30, params={"agent": {"path": "/big.log"}})  # fmt: skip
    task = HostTask.objects.create(job=job, ip=IP, task_id=str(uuid.uuid4()), state=State.RUNNING)
    with redis_client(app) as client:
        manifest = blobs.put_blob(client, io.BytesIO(b"x" * 5000),
                                  namespace=names.fetch_namespace(job.pk, IP))  # fmt: skip
    sent = Report(task_id=task.task_id, outcome="ok", exit_code=0, fetch_manifest=manifest,
                  stdout=Stream.text("sent"))  # fmt: skip
    report = from_host(task, sent)

    results.store_batch([], [report])
    results.finish_fetch(task.task_id, report)

    task.refresh_from_db()
    assert task.state == State.ERROR and "5000 bytes, more than CMDB_MAX_FETCH_BYTES" in task.error
    assert task.fetched is None
    with redis_client(app) as client:
        assert not client.exists(f"cmdb:{manifest['namespace']}:{manifest['sha256']}:meta")
