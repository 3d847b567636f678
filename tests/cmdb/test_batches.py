"""cmdb.jobs.batches.advance when the next batch cannot be signed (nothing is published)."""

import uuid

import pytest
from django.utils import timezone

from cmdb.jobs import batches
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job

pytestmark = pytest.mark.django_db


def test_a_batch_the_server_cannot_sign_ends_in_error_saying_why(settings, tmp_path):
    from cmdb.celery import app

    missing = tmp_path / "no-key"
    settings.CMDB = {**settings.CMDB, "SIGNING_KEY": str(missing), "SIGNING_KEY_CREATE": False}
    job = Job.objects.create(kind="push", command="push", timeout=30, reach_timeout=30,
                             params={"batch": 1, "agent": {}})  # fmt: skip
    done = HostTask.objects.create(
        job=job, ip="127.0.1.91", task_id=str(uuid.uuid4()), state=State.OK, batch=0,
        reach_deadline=timezone.now(),
    )  # fmt: skip
    held = HostTask.objects.create(job=job, ip="127.0.1.92", task_id=str(uuid.uuid4()), batch=1)

    assert batches.advance(job.pk, app) == "stopped"

    held.refresh_from_db()
    assert held.state == State.ERROR
    assert held.error.startswith("not sent: the central worker cannot sign")
    assert str(missing) in held.error
    done.refresh_from_db()
    assert done.state == State.OK
