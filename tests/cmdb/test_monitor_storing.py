"""The monitor's sweep and fetches whose file the server is storing (database, no broker)."""

import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from cmdb.jobs import monitor
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from wire.messages import Heartbeat

pytestmark = pytest.mark.django_db


def running(kind: str, state: str = State.RUNNING) -> HostTask:
    job = Job.objects.create(kind=kind, command=kind, timeout=30, reach_timeout=30)
    return HostTask.objects.create(
        job=job, ip="127.0.1.95", task_id=str(uuid.uuid4()), state=state,
        agent="agent@a", agent_pid=7, started_at=timezone.now(),
    )  # fmt: skip


def test_a_fetch_being_stored_outlives_its_agent_but_not_its_deadline():
    from cmdb.celery import app

    cfg = {**settings.CMDB, "RESULT_GRACE": 10}
    now = time.time()
    sweeper = monitor.Monitor(app, cfg, clock=time.time)
    sweeper.liveness.listening(now - 60)  # listening long enough to judge
    sweeper.liveness.event(now)
    beat = Heartbeat(hosts=["127.0.1.95"], agent="agent@a", agent_pid=8, at=now)
    sweeper.liveness.heard("127.0.1.95", beat, now)  # restarted since it ran them
    storing = running("fetch", State.STORING)
    command = running("command")

    sweeper.sweep()

    storing.refresh_from_db()
    command.refresh_from_db()
    assert command.state == State.LOST and "restarted" in command.error
    assert storing.state == State.STORING

    HostTask.objects.filter(pk=storing.pk).update(
        started_at=timezone.now() - timedelta(seconds=41)  # past 30 s timeout + 10 s grace
    )
    sweeper.sweep()

    storing.refresh_from_db()
    assert storing.state == State.LOST
    assert storing.error.startswith("the host sent its file, but the server did not finish")
