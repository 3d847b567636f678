"""Persisting what agents report, and the end states the server concludes on its own.

Everything is written in batches: the central worker takes results off the broker hundreds at a
time (cmdb.jobs.intake), and one batch is a handful of queries in one transaction. Every change
of a host task's state also writes its django-celery-results TaskResult, so
``AsyncResult(task_id)`` on the server agrees with the CMDB.
"""

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django_celery_results.models import TaskResult

from cmdb.assets.store import store_report
from cmdb.celery import app as cmdb_app
from cmdb.files.fetched import store_fetched
from cmdb.hosts.models import Host
from cmdb.jobs import exceptions
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import CELERY_STATE, JobKindChoices
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from wire import blobs, names
from wire.messages import Report, Started, WireError

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

#: How the stdout of a fetch's host task starts while the server stores its file (the monitor
#: tells those from tasks still running on their host by it).
STORING = "received"
#: The central worker's task that stores a fetched file (cmdb.jobs.tasks.store_fetched).
STORE_FETCHED = "cmdb.jobs.store_fetched"
E_FORGED_FETCH = "refused: the file was not sent where this host task asked for it"

#: Every HostTask field a report may change (bulk_update writes them all).
REPORTED_FIELDS = [
    "state", "exit_code", "agent", "agent_pid", "started_at", "finished_at", "duration", "error",
    *(f"{s}_{p}" for s in ("stdout", "stderr") for p in ("head", "tail", "bytes", "truncated")),
]  # fmt: skip

TASK_RESULT_FIELDS = [
    "status", "result", "traceback", "content_type", "content_encoding", "task_name",
    "task_args", "task_kwargs", "worker", "date_started", "date_done",
]  # fmt: skip

#: Rows per INSERT statement (SQLite caps the variables in one statement).
BULK_BATCH = 200


def _ts(epoch) -> datetime | None:
    return datetime.fromtimestamp(float(epoch), tz=UTC) if epoch is not None else None


def _celery_result(state: str, payload: dict, error: str) -> str:
    if state == State.CANCELLED:
        return json.dumps({"exc_type": "TaskRevokedError", "exc_module": "celery.exceptions",
                           "exc_message": [error or "cancelled"]})  # fmt: skip
    if state in FAILURE_EXCEPTION:
        cls = FAILURE_EXCEPTION[state]
        return json.dumps({"exc_type": cls.__name__, "exc_module": cls.__module__,
                           "exc_message": [error or state]})  # fmt: skip
    return json.dumps(payload)


def _task_result(task: HostTask, payload: dict, now: datetime) -> TaskResult:
    return TaskResult(
        task_id=task.task_id,
        status=CELERY_STATE[task.state],
        result=_celery_result(task.state, payload, task.error),
        traceback=payload.get("traceback"),
        content_type="application/json",
        content_encoding="utf-8",
        task_name=names.RUN_COMMAND,
        task_args=json.dumps([{"job": str(task.job_id), "host": task.ip}]),
        task_kwargs="{}",
        worker=task.agent or None,
        date_started=task.started_at,
        date_done=now,
    )


def _update_many(tasks: list[HostTask], fields: list[str]) -> None:
    """One prepared UPDATE run for every row (executemany).

    Django's bulk_update builds a CASE expression per field and row: about 2 ms of Python per
    row here, which capped the central worker at a few hundred results a second.
    """
    model_fields = [HostTask._meta.get_field(name) for name in fields]
    qn = connection.ops.quote_name
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        qn(HostTask._meta.db_table),
        ", ".join(f"{qn(f.column)} = %s" for f in model_fields),
        qn(HostTask._meta.pk.column),
    )
    params = [
        [f.get_db_prep_save(getattr(task, f.attname), connection) for f in model_fields] + [task.pk]
        for task in tasks
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _write(changed: dict[str, tuple[HostTask, dict]]) -> None:
    """Save changed host tasks and upsert their TaskResults: a few statements per batch."""
    if not changed:
        return
    now = timezone.now()
    _update_many([task for task, _ in changed.values()], REPORTED_FIELDS)
    TaskResult.objects.bulk_create(
        [_task_result(task, payload, now) for task, payload in changed.values()],
        batch_size=BULK_BATCH,
        update_conflicts=True,
        unique_fields=["task_id"],
        update_fields=TASK_RESULT_FIELDS,
    )


def _text(value) -> str:
    # Commands print NUL bytes (find -print0, /proc/*/environ); PostgreSQL text refuses them.
    return str(value or "").replace("\x00", "\ufffd")


def _stream_fields(prefix: str, stream: dict | None) -> dict:
    stream = stream or {}
    return {
        f"{prefix}_head": _text(stream.get("head")),
        f"{prefix}_tail": _text(stream.get("tail")),
        f"{prefix}_bytes": int(stream.get("total_bytes", 0)),
        f"{prefix}_truncated": bool(stream.get("truncated", False)),
    }


def _apply_started(task: HostTask, info: dict) -> bool:
    # Only from pending or an inferred end: a notice that arrives after the result (two
    # messages, possibly in different batches) must not move a finished task backwards.
    if task.state != State.PENDING and task.state not in State.inferred():
        return False
    task.state = State.RUNNING
    # The server's clock, not the agent's: the overdue backstop must not depend on host clocks.
    task.started_at = timezone.now()
    task.agent = info.get("agent") or ""
    task.agent_pid = info.get("agent_pid")
    task.error = ""
    return True


def _apply_result(task: HostTask, payload: dict) -> bool:
    if payload.get("duplicate"):
        # An agent refused a second delivery of this task id: the first one owns the record.
        logger.warning("agent %s refused a duplicate of %s", payload.get("agent"), task.task_id)
        return False
    if task.is_terminal and task.state not in State.inferred() | {State.CANCELLED}:
        logger.warning("duplicate result for %s ignored", task.task_id)
        return False
    # A real result beats what the server inferred (unreachable, lost) or a cancel that raced
    # with the command finishing: it is what actually happened on the host.
    fields = {
        "state": OUTCOME_STATE.get(payload.get("outcome"), State.ERROR),
        "exit_code": payload.get("exit_code"),
        **_stream_fields("stdout", payload.get("stdout")),
        **_stream_fields("stderr", payload.get("stderr")),
        "agent": payload.get("agent") or task.agent,
        "agent_pid": payload.get("agent_pid") or task.agent_pid,
        "started_at": _ts(payload.get("started_at")) or task.started_at,
        "finished_at": _ts(payload.get("finished_at")),
        "duration": payload.get("duration"),
        "error": _text(payload.get("error")),
    }
    manifest = payload.get("fetch_manifest")
    if manifest and fields["state"] == State.OK:
        # The host has sent its file; the task ends once the server has stored it
        # (finish_fetch, off the intake: a large file must not hold up other results).
        fields["state"] = State.RUNNING
        # The server's clock from now: the monitor's overdue backstop then gives the storing
        # a whole timeout + grace, whatever the host's clock says.
        fields["started_at"] = timezone.now()
        fields["stdout_head"] = _text(
            f"{STORING} {manifest.get('size')} bytes, sha256 {manifest.get('sha256')}; "
            "storing on the server\n"
        )
    for name, value in fields.items():
        setattr(task, name, value)
    return True


def _read(message, items: Iterable[dict]) -> list[dict]:
    """The items that follow the contract (wire.messages), as dicts with every field."""
    read = []
    for item in items:
        try:
            read.append(message.from_wire(item).to_wire())
        except WireError as exc:
            task_id = item.get("task_id") if isinstance(item, dict) else None
            logger.error("%s for %s dropped: %s", message.WHAT, task_id, exc)
    return read


def store_batch(started: Iterable[dict], finished: Iterable[dict]) -> int:
    """Apply "started" notices, then results, in one transaction; return host tasks changed."""
    started, finished = _read(Started, started), _read(Report, finished)
    ids = {item["task_id"] for item in started + finished}
    with transaction.atomic():
        # select_for_update: on PostgreSQL two central workers must not interleave on a task
        # (SQLite takes the write lock at BEGIN IMMEDIATE anyway).
        rows = HostTask.objects.select_for_update().filter(task_id__in=ids)
        tasks = {t.task_id: t for t in rows}
        changed: dict[str, tuple[HostTask, dict]] = {}
        for apply, items in ((_apply_started, started), (_apply_result, finished)):
            for item in items:
                task = tasks.get(item["task_id"])
                if task is None:
                    # For a job deleted meanwhile, or a forged id: nothing to attach it to.
                    logger.warning("report for unknown host task %s from %s",
                                   item["task_id"], item.get("agent"))  # fmt: skip
                    continue
                try:
                    applied = apply(task, item)
                except (TypeError, ValueError, AttributeError, OverflowError):
                    # One malformed report must not hold up the batch it arrived in.
                    # (apply computes every field before it changes the task.)
                    logger.exception("malformed report for %s dropped", task.task_id)
                    continue
                if applied:
                    changed[task.task_id] = (task, item if apply is _apply_result else {})
        _write(changed)
        _store_facts([(task, p) for task, p in changed.values() if p.get("facts_report")])
    # After the commit: the storing task must find the row as written here.
    _hand_over_fetched([(t, p) for t, p in changed.values() if p.get("fetch_manifest")
                        and t.state == State.RUNNING])  # fmt: skip
    return len(changed)


def _hand_over_fetched(fetched: list[tuple[HostTask, dict]]) -> None:
    """Queue each received file for storing by the central worker's pool."""
    for task, payload in fetched:
        try:
            cmdb_app.send_task(STORE_FETCHED, args=[task.task_id, payload])
        except Exception:  # the broker this payload just came from is gone: store it here
            logger.exception("could not queue the storing of %s; storing it now", task.task_id)
            finish_fetch(task.task_id, payload)


def finish_fetch(task_id: str, payload: dict) -> None:
    """Assemble the file a host sent for a fetch job into the job's folder (one folder per
    host), verified, and end its host task: ok with its ``fetched`` record, or error."""
    task = HostTask.objects.select_related("job").filter(task_id=task_id).first()
    manifest = payload.get("fetch_manifest") or {}
    # Running as store_batch left it, or ended "lost" meanwhile by the monitor (the file did
    # arrive); not cancelled, not stored already.
    if task is None or task.fetched or task.state not in State.inferred() | {State.RUNNING}:
        logger.warning("fetched file for %s not stored: the host task is %s", task_id,
                       task.state if task else "gone")  # fmt: skip
        if task and task.state == State.CANCELLED and _own_blob(task, manifest):
            _delete_blob(manifest)  # nobody will collect it: Redis is not a file store
        return
    job = task.job
    if not _own_blob(task, manifest):
        # Only the blob this host was asked to send: a forged manifest naming a push's blob
        # must not be copied (and then deleted) by the server.
        logger.warning("fetch manifest from %s refused (namespace %r)", task.ip,
                       manifest.get("namespace"))  # fmt: skip
        task.state, task.error = State.ERROR, E_FORGED_FETCH
    else:
        # The CLI names a folder; the API and the admin leave it to FETCH_DIR/<job id>.
        to = job.params.get("to") or str(settings.CMDB["FETCH_DIR"] / str(job.pk))
        try:
            local = store_fetched(cmdb_app, to, task.ip, job.params["agent"]["path"], manifest)
        except Exception as exc:  # the host task must say why, whatever it was
            if HostTask.objects.filter(pk=task.pk).exclude(fetched=None).exists():
                return  # a second delivery of this result, after the first had stored it
            logger.exception("fetched file from %s not stored", task.ip)
            task.state, task.error = State.ERROR, f"not stored on the server: {exc}"
        else:
            sha, size = manifest.get("sha256", ""), manifest.get("size")
            task.state = State.OK
            task.stdout_head = f"fetched {size} bytes, sha256 {sha} -> {local}\n"
            task.fetched = {"path": local, "sha256": sha, "size": size}
    with transaction.atomic():
        # Cancelled while it was being stored: the operator's word stands, the copy goes.
        if HostTask.objects.select_for_update().get(pk=task.pk).state == State.CANCELLED:
            if task.fetched:
                Path(task.fetched["path"]).unlink(missing_ok=True)
            return
        _write({task.task_id: (task, payload)})
        if task.fetched:
            HostTask.objects.filter(pk=task.pk).update(fetched=task.fetched)


def _own_blob(task: HostTask, manifest: dict) -> bool:
    """The manifest names the blob this host was asked to send for this fetch job."""
    namespace = names.fetch_namespace(task.job_id, task.ip)
    return task.job.kind == JobKindChoices.FETCH and manifest.get("namespace") == namespace


def _delete_blob(manifest: dict) -> None:
    try:
        with redis_client(cmdb_app) as client:
            blobs.delete_blob(client, manifest)
    except Exception:  # it expires by itself in the end
        logger.warning("could not delete the blob of a cancelled fetch", exc_info=True)


def _store_facts(collected: list[tuple[HostTask, dict]]) -> None:
    """Asset rows and history for collect jobs' results (in the batch's transaction)."""
    if not collected:
        return
    hosts = Host.objects.in_bulk([task.host_id for task, _ in collected if task.host_id])
    for task, payload in collected:
        host = hosts.get(task.host_id)
        if host is None:
            continue  # removed from the inventory meanwhile
        try:
            with transaction.atomic():  # a savepoint: one bad report spoils only itself
                store_report(host, payload["facts_report"], job_id=task.job_id)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError, DatabaseError):
            # The savepoint undid this report only; the host task still gets its result.
            logger.exception("facts from %s could not be stored", task.ip)


def store_result(payload: dict) -> int:
    """Store one agent result (the link callback of workers.run_command)."""
    return store_batch([], [payload])


def mark_started(info: dict) -> int:
    """Record that an agent began a host task."""
    return store_batch([info], [])


def conclude(
    task_pks: Iterable[int],
    state: str,
    error: str | Callable[[HostTask], str],
    only_from: Iterable[str] | None = None,
) -> list[str]:
    """End host tasks the server has judged (unreachable, lost, cancelled, not dispatched).

    ``error`` is the reason, or a function of the task giving it. ``only_from`` guards against
    a race: a task that moved on meanwhile keeps its new state. Returns the task ids ended.
    """
    allowed = set(only_from) if only_from is not None else set(State.active())
    with transaction.atomic():
        tasks = HostTask.objects.select_for_update().filter(
            pk__in=list(task_pks), state__in=allowed
        )
        now = timezone.now()
        changed = {}
        for task in tasks:
            task.state, task.finished_at = state, now
            task.error = error(task) if callable(error) else error
            if task.started_at:
                task.duration = (now - task.started_at).total_seconds()
            changed[task.task_id] = (task, {})
        _write(changed)
    return list(changed)
