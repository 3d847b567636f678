"""Writing host tasks and their django-celery-results TaskResults, a batch at a time.

Every change of a host task's state (cmdb.jobs.lifecycle) is written here with its TaskResult,
so that ``AsyncResult(task_id)`` on the server agrees with the CMDB. A batch of hundreds of
results is a handful of statements (cmdb.jobs.bulk).
"""

import json
from datetime import datetime

from django.utils import timezone
from django_celery_results.models import TaskResult

from cmdb.jobs import bulk, exceptions
from cmdb.jobs.choices import AGENT_TASK, CELERY_STATE
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job

#: Exception recorded in TaskResult for each failing end state (Celery needs an exception shape).
FAILURE_EXCEPTION = {
    State.TIMEOUT: exceptions.HostTaskTimeout,
    State.ERROR: exceptions.HostTaskError,
    State.UNREACHABLE: exceptions.HostUnreachable,
    State.LOST: exceptions.HostTaskLost,
}

#: Every HostTask field a state change may set (one prepared UPDATE writes them all).
WRITTEN_FIELDS = [
    "state", "exit_code", "agent", "agent_pid", "started_at", "finished_at", "duration", "error",
    "fetched", "late_state", "late_at",
    *(f"{s}_{p}" for s in ("stdout", "stderr") for p in ("head", "tail", "bytes", "truncated")),
]  # fmt: skip

TASK_RESULT_FIELDS = [
    "status", "result", "traceback", "content_type", "content_encoding", "task_name",
    "task_args", "task_kwargs", "worker", "date_started", "date_done",
]  # fmt: skip

#: django-celery-results' TaskResult.worker is shorter than HostTask.agent.
WORKER_LENGTH = TaskResult._meta.get_field("worker").max_length


def _celery_result(state: str, payload: dict, error: str) -> str:
    if state == State.CANCELLED:
        return json.dumps({"exc_type": "TaskRevokedError", "exc_module": "celery.exceptions",
                           "exc_message": [error or "cancelled"]})  # fmt: skip
    if state in FAILURE_EXCEPTION:
        cls = FAILURE_EXCEPTION[state]
        return json.dumps({"exc_type": cls.__name__, "exc_module": cls.__module__,
                           "exc_message": [error or state]})  # fmt: skip
    return json.dumps(payload)


def _task_result(task: HostTask, payload: dict, kind: str, now: datetime) -> TaskResult:
    return TaskResult(
        task_id=task.task_id,
        status=CELERY_STATE[task.state],
        result=_celery_result(task.state, payload, task.error),
        traceback=payload.get("traceback"),
        content_type="application/json",
        content_encoding="utf-8",
        # What the host ran: a collection is workers.collect_facts, not a command.
        task_name=AGENT_TASK[kind],
        task_args=json.dumps([{"job": str(task.job_id), "host": task.ip}]),
        task_kwargs="{}",
        worker=task.agent[:WORKER_LENGTH] or None,
        date_started=task.started_at,
        date_done=now,
    )


def write(changed: dict[str, tuple[HostTask, dict]], kinds: dict | None = None) -> None:
    """Save changed host tasks and upsert their TaskResults (``payload``: what the host
    reported, the result Celery shows for a successful one). ``kinds``: job pk -> kind, when
    the caller has them."""
    if not changed:
        return
    now = timezone.now()
    tasks = [task for task, _ in changed.values()]
    if kinds is None:
        kinds = dict(Job.objects.filter(pk__in={t.job_id for t in tasks})
                     .values_list("pk", "kind"))  # fmt: skip
    bulk.update_many(HostTask, tasks, WRITTEN_FIELDS)
    bulk.insert_many(
        TaskResult,
        [_task_result(t, payload, kinds[t.job_id], now) for t, payload in changed.values()],
        conflict="task_id",
        update_fields=TASK_RESULT_FIELDS,
    )
