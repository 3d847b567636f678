"""Signed output chunks sent again (replayed) are not believed again (cmdb.jobs.live.relay):
only a seq beyond the last one believed of the task, and nothing long after the task ended."""

import base64
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from cmdb.jobs import live
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from tests.support.factories import from_host
from wire.messages import Output

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_url")]

IP = "127.0.3.7"


def chunk(task, seq: int, text: str) -> dict:
    return from_host(task, Output(task_id=task.task_id, host=IP, agent=f"agent@{IP}", seq=seq,
                                  stdout=base64.b64encode(text.encode()).decode()))  # fmt: skip


def shown(job_id) -> list[str]:
    with live.reader() as client:
        return [e["stdout"] for _, e in live.read(client, job_id) if e.get("type") == "output"]


def test_a_replayed_or_older_chunk_is_dropped_and_a_late_one_too():
    job = Job.objects.create(kind=JobKindChoices.COMMAND, command="x", timeout=30,
                             reach_timeout=30)  # fmt: skip
    task = HostTask.objects.create(job=job, ip=IP, task_id=str(uuid.uuid4()), state=State.RUNNING)
    one, two = chunk(task, 1, "one\n"), chunk(task, 2, "two\n")

    assert live.relay([one, two]) == 2
    assert live.relay([one]) == 0  # the same signed chunk again
    assert live.relay([two, chunk(task, 3, "three\n")]) == 1

    HostTask.objects.filter(pk=task.pk).update(
        state=State.OK, finished_at=timezone.now() - live.LATE - timedelta(seconds=5)
    )
    assert live.relay([chunk(task, 9, "late\n")]) == 0
    assert shown(job.pk) == ["one\n", "two\n", "three\n"]
