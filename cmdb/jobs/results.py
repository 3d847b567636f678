"""Persisting what agents report, and the end states the server concludes on its own.

Every change of a host task's state also writes its django-celery-results TaskResult, so
``AsyncResult(task_id)`` on the server agrees with the CMDB.
"""

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from django.db import transaction
from django_celery_results.models import TaskResult

from cmdb.jobs import exceptions
from cmdb.jobs.choices import CELERY_STATE
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from workers import config

logger = logging.getLogger(__name__)

#: The agent runner's outcome -> host task state.
OUTCOME_STATE = {
    "ok": State.OK,
    "failed": State.FAILED,
    "timeout": State.TIMEOUT,
    "cancelled": State.CANCELLED,
    "error": State.ERROR,
}

#: Exception recorded in TaskResult for each failing end state (Celery needs an exception shape).
FAILURE_EXCEPTION = {
    State.TIMEOUT: exceptions.HostTaskTimeout,
    State.ERROR: exceptions.HostTaskError,
    State.UNREACHABLE: exceptions.HostUnreachable,
    State.LOST: exceptions.HostTaskLost,
}


def _ts(epoch) -> datetime | None:
    return datetime.fromtimestamp(float(epoch), tz=UTC) if epoch is not None else None


def _celery_result(state: str, payload: dict, error: str) -> str:
    if state == State.CANCELLED:
        exc = {
            "exc_type": "TaskRevokedError",
            "exc_module": "celery.exceptions",
            "exc_message": [error or "cancelled"],
        }
        return json.dumps(exc)
    if state in FAILURE_EXCEPTION:
        cls = FAILURE_EXCEPTION[state]
        return json.dumps(
            {
                "exc_type": cls.__name__,
                "exc_module": cls.__module__,
                "exc_message": [error or state],
            }
        )
    return json.dumps(payload)


def _store_task_result(task: HostTask, state: str, payload: dict, error: str, worker: str):
    TaskResult.objects.store_result(
        content_type="application/json",
        content_encoding="utf-8",
        task_id=task.task_id,
        result=_celery_result(state, payload, error),
        status=CELERY_STATE[state],
        traceback=payload.get("traceback"),
        task_name=config.RUN_COMMAND,
        task_args=json.dumps([{"job": str(task.job_id), "host": task.ip}]),
        task_kwargs="{}",
        worker=worker or None,
    )


def _stream_fields(prefix: str, stream: dict | None) -> dict:
    stream = stream or {}
    return {
        f"{prefix}_head": stream.get("head", ""),
        f"{prefix}_tail": stream.get("tail", ""),
        f"{prefix}_bytes": int(stream.get("total_bytes", 0)),
        f"{prefix}_truncated": bool(stream.get("truncated", False)),
    }


def store_result(payload: dict) -> HostTask | None:
    """Store an agent's result for one host task (the link callback of workers.run_command)."""
    task_id = payload.get("task_id")
    state = OUTCOME_STATE.get(payload.get("outcome"), State.ERROR)
    with transaction.atomic():
        task = HostTask.objects.select_for_update().filter(task_id=task_id).first()
        if task is None:
            # A result for a job deleted meanwhile, or a forged id: nothing to attach it to.
            logger.warning("result for unknown host task %s from %s", task_id, payload.get("agent"))
            return None
        if task.is_terminal and task.state not in State.inferred() | {State.CANCELLED}:
            logger.warning("duplicate result for %s ignored", task_id)
            return task
        # A real result beats what the server inferred (unreachable, lost) or a cancel that
        # raced with the command finishing: it is what actually happened on the host.
        fields = {
            "state": state,
            "exit_code": payload.get("exit_code"),
            **_stream_fields("stdout", payload.get("stdout")),
            **_stream_fields("stderr", payload.get("stderr")),
            "agent": payload.get("agent") or task.agent,
            "agent_pid": payload.get("agent_pid") or task.agent_pid,
            "started_at": _ts(payload.get("started_at")) or task.started_at,
            "finished_at": _ts(payload.get("finished_at")),
            "duration": payload.get("duration"),
            "error": payload.get("error") or "",
        }
        for name, value in fields.items():
            setattr(task, name, value)
        task.save(update_fields=list(fields))
        _store_task_result(task, state, payload, task.error, task.agent)
    return task


def mark_started(info: dict) -> bool:
    """Record that an agent began a host task; ignored once the task has a real end."""
    started = _ts(info.get("started_at"))
    with transaction.atomic():
        updated = HostTask.objects.filter(
            task_id=info.get("task_id"), state__in={State.PENDING} | State.inferred()
        ).update(
            state=State.RUNNING,
            started_at=started,
            agent=info.get("agent") or "",
            agent_pid=info.get("agent_pid"),
            error="",
        )
        if updated:
            task = HostTask.objects.get(task_id=info["task_id"])
            _store_task_result(task, State.RUNNING, {}, "", task.agent)
    return bool(updated)


def conclude(
    task_pks: Iterable[int],
    state: str,
    error: str,
    only_from: Iterable[str] | None = None,
) -> int:
    """End host tasks the server has judged (unreachable, lost, cancelled, not dispatched).

    ``only_from`` guards against a race: a task that moved on meanwhile keeps its new state.
    """
    allowed = set(only_from) if only_from is not None else set(State.active())
    ended = 0
    with transaction.atomic():
        tasks = list(
            HostTask.objects.select_for_update().filter(pk__in=list(task_pks), state__in=allowed)
        )
        now = datetime.now(tz=UTC)
        for task in tasks:
            task.state, task.error, task.finished_at = state, error, now
            if task.started_at:
                task.duration = (now - task.started_at).total_seconds()
            task.save(update_fields=["state", "error", "finished_at", "duration"])
            _store_task_result(task, state, {}, error, task.agent)
            ended += 1
    return ended
