"""The one place a host task's state changes.

Every change is a move checked against ``TRANSITIONS`` (cmdb.jobs.choices) and against the
states the caller means to move from (``only_from``: what it saw, so that a task that moved on
meanwhile keeps its new state). A refused move changes nothing and is logged. The verbs below
are the events of a host task's life; each says where it may come from:

    begin        the agent started it                      pending
    report       the agent's report arrived                pending, running, cancelled; on a
                                                           lost task it is kept as a late
                                                           result, and on an unreachable one a
                                                           refusal is only logged (the server
                                                           held its claim: it never ran)
    stored       the server stored a fetched file          storing, lost
    not_stored   ... or could not                          storing, lost
    conclude     the server's own verdict (unreachable, lost, cancelled, not dispatched):
                 in bulk, from the states its caller names

The in-memory verbs change the task object only; their callers write it (cmdb.jobs.records)
in the transaction that holds its row. ``conclude`` locks, moves and writes by itself.
"""

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from cmdb.jobs import records
from cmdb.jobs.choices import TRANSITIONS
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from wire.messages import Outcome, Report, Started

logger = logging.getLogger(__name__)

#: The agent's outcome -> host task state.
OUTCOME_STATE = {
    Outcome.OK: State.OK,
    Outcome.FAILED: State.FAILED,
    Outcome.TIMEOUT: State.TIMEOUT,
    Outcome.CANCELLED: State.CANCELLED,
    Outcome.ERROR: State.ERROR,
    Outcome.UNREACHABLE: State.UNREACHABLE,
}

BEGIN_FROM = frozenset({State.PENDING})
REPORT_FROM = frozenset({State.PENDING, State.RUNNING, State.CANCELLED})
#: Outcomes only a command (or collection, push, fetch) that ran has; a refusal is an error or
#: a cancel.
RAN = frozenset({State.OK, State.FAILED, State.TIMEOUT})
STORED_FROM = frozenset({State.STORING, State.LOST})

R_ILLEGAL = "not a move a host task makes"
R_MOVED_ON = "it is {state} now, not {expected}"


def may_move(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, ())


def move(task: HostTask, new: str, only_from: Iterable[str] | None = None) -> bool:
    """Set ``task.state`` to ``new`` if that move is allowed from where it is; else log why not
    and change nothing. The only assignment of a host task's state in the project."""
    old = task.state
    if not may_move(old, new):
        reason = R_ILLEGAL
    elif only_from is not None and old not in only_from:
        reason = R_MOVED_ON.format(state=old, expected=" or ".join(sorted(only_from)))
    else:
        task.state = new
        return True
    logger.info("host task %s: %s -> %s refused (%s)", task.task_id, old, new, reason)
    return False


def _ts(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, tz=UTC) if epoch is not None else None


def _text(value) -> str:
    # Commands print NUL bytes (find -print0, /proc/*/environ); PostgreSQL text refuses them.
    return str(value or "").replace("\x00", "\ufffd")


#: What the columns hold (PostgreSQL refuses more; SQLite would keep anything): HostTask.agent,
#: and the integer columns (agent_pid, exit_code).
MAX_AGENT_NAME = 255
INT32 = 2**31 - 1


def _name(value) -> str:
    return _text(value)[:MAX_AGENT_NAME]


def _int32(value, low: int = -INT32 - 1) -> int | None:
    """``value`` if the column can hold it, else None (a pid or exit code no host has)."""
    return value if isinstance(value, int) and low <= value <= INT32 else None


def _stream_fields(prefix: str, stream) -> dict:
    return {
        f"{prefix}_head": _text(stream.head),
        f"{prefix}_tail": _text(stream.tail),
        f"{prefix}_bytes": stream.total_bytes,
        f"{prefix}_truncated": stream.truncated,
    }


def _set(task: HostTask, fields: dict) -> None:
    for name, value in fields.items():
        setattr(task, name, value)


def begin(task: HostTask, notice: Started) -> bool:
    """The agent started the task. A notice that arrives after the result (two messages,
    possibly in different batches) must not move a finished task backwards. Nor may a notice
    begin a task twice: an agent sends one per task, so a second (a captured one sent again)
    must not bring a task found lost back to running with a new deadline."""
    if task.started_at is not None and task.state != State.PENDING:
        logger.info("host task %s: a second started notice ignored", task.task_id)
        return False
    if not move(task, State.RUNNING, only_from=BEGIN_FROM):
        return False
    # The server's clock, not the agent's: the overdue backstop must not depend on host clocks.
    _set(task, {"started_at": timezone.now(), "agent": _name(notice.agent),
                "agent_pid": _int32(notice.agent_pid, 0), "error": ""})  # fmt: skip
    return True


def report(task: HostTask, report: Report) -> bool:
    """What the host says happened. It beats a cancel that raced with the command finishing. A
    fetch whose host sent its file goes on as storing: it ends once the server has stored it
    (cmdb.jobs.results.finish_fetch). After the server's own verdict it changes no state: on a
    lost task it is kept as its late result (when, what), an unreachable one never ran."""
    if report.duplicate:
        # An agent refused a second delivery of this task id: the first one owns the record.
        logger.warning("agent %s refused a duplicate of %s", report.agent, task.task_id)
        return False
    if report.reaped:
        return _reaped(task, _text(report.error))
    state = OUTCOME_STATE.get(report.outcome, State.ERROR)
    if task.state == State.UNREACHABLE and state not in RAN:
        # The server held its run-once claim: a refusal is all that can come (a late agent, or
        # the cancel mark the sweep set): nobody cancelled it, and it never ran.
        logger.info("host task %s: %s from its agent after it was unreachable, ignored (%s)",
                    task.task_id, state, _text(report.error)[:200])  # fmt: skip
        return False
    fields = {
        "exit_code": _int32(report.exit_code),
        **_stream_fields("stdout", report.stdout),
        **_stream_fields("stderr", report.stderr),
        "agent": _name(report.agent) or task.agent,
        "agent_pid": _int32(report.agent_pid, 0) or task.agent_pid,
        "started_at": _ts(report.started_at) or task.started_at,
        "finished_at": _ts(report.finished_at),
        "duration": report.duration,
        "error": _text(report.error),
    }
    if task.state == State.UNREACHABLE:
        # Only if the broker lost the agent's claim (restarted without its data, a failover
        # to a replica behind) could the server's fence have succeeded on a task that ran.
        logger.error("host task %s ran after all, though unreachable: did the broker lose its "
                     "data? (the fence needs a broker that keeps it)", task.task_id)  # fmt: skip
        return _late(task, state, fields)
    if task.state == State.LOST:
        return _late(task, state, fields)
    manifest = report.fetch_manifest
    if manifest and state == State.OK:
        state = State.STORING
        # The server's clock from now: the monitor's overdue backstop then gives the storing
        # a whole timeout + grace, whatever the host's clock says.
        fields["started_at"], fields["finished_at"] = timezone.now(), None
        fields["stdout_head"] = _text(
            f"received {manifest.get('size')} bytes, sha256 {manifest.get('sha256')}; "
            "storing on the server\n"
        )
    if not move(task, state, only_from=REPORT_FROM):
        return False
    _set(task, fields)
    return True


def _reaped(task: HostTask, said: str) -> bool:
    """The restarted agent ended what its dead predecessor left of this task's command: lost,
    with what was killed; said beside an earlier lost verdict."""
    if task.state in (State.PENDING, State.RUNNING):
        if not move(task, State.LOST, only_from={State.PENDING, State.RUNNING}):
            return False
        now = timezone.now()
        _set(task, {"error": said, "finished_at": now})
        _set_duration(task, now)
        return True
    if task.state == State.LOST and said not in task.error:
        _set(task, {"error": f"{task.error}; then {said}"})
        return True
    return False


def _late(task: HostTask, state: str, fields: dict) -> bool:
    """Keep a result that came after the server's verdict (lost: a frozen agent that thawed, a
    network that healed): beside it, the verdict stays. The first one only."""
    if task.late_state:
        return False
    logger.warning("host task %s: a late result (%s) after it was %s, kept", task.task_id,
                   state, task.state)  # fmt: skip
    # The verdict's time and reason stay; the rest is what the host said (it had nothing).
    said = f"; the late result says: {fields['error']}" if fields["error"] else ""
    fields = {**fields, "late_state": state, "late_at": timezone.now(),
              "finished_at": task.finished_at, "error": task.error + said}  # fmt: skip
    _set(task, fields)
    return True


def stored(task: HostTask, fetched: dict) -> bool:
    """The server has the host's file: ``fetched`` is its record (path, sha256, size)."""
    if not move(task, State.OK, only_from=STORED_FROM):
        return False
    _set(task, {"fetched": fetched, "finished_at": timezone.now(), "error": "",
                "stdout_head": f"fetched {fetched['size']} bytes, sha256 {fetched['sha256']} "
                               f"-> {fetched['path']}\n"})  # fmt: skip
    return True


def not_stored(task: HostTask, error: str) -> bool:
    if not move(task, State.ERROR, only_from=STORED_FROM):
        return False
    _set(task, {"error": error, "finished_at": timezone.now()})
    return True


def _set_duration(task: HostTask, now: datetime) -> None:
    if task.started_at:
        task.duration = (now - task.started_at).total_seconds()


def conclude(
    task_pks: Iterable[int],
    state: str,
    error: str | Callable[[HostTask], str],
    only_from: Iterable[str],
) -> list[str]:
    """End host tasks the server has judged (unreachable, lost, cancelled, not dispatched).

    ``error`` is the reason, or a function of the task giving it. ``only_from`` is the state
    the caller saw: a task that moved on meanwhile keeps its new state. Returns the task ids
    ended.
    """
    only_from = frozenset(only_from)
    with transaction.atomic():
        tasks = HostTask.objects.select_for_update().filter(pk__in=list(task_pks))
        now = timezone.now()
        changed = {}
        for task in tasks:
            reason = error(task) if callable(error) else error  # of the task as it was
            if not move(task, state, only_from=only_from):
                continue
            task.finished_at, task.error = now, reason
            _set_duration(task, now)
            changed[task.task_id] = (task, {})
        records.write(changed)
    return list(changed)
