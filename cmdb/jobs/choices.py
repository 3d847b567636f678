"""Choice sets for jobs and host tasks."""

from celery import states as celery_states
from django.db import models

from wire import names


class JobKindChoices(models.TextChoices):
    COMMAND = "command", "command"
    COLLECT = "collect", "collect facts"
    PUSH = "push", "push files"
    FETCH = "fetch", "fetch a file"


#: The agent task that does a job kind's work on each host.
AGENT_TASK = {
    JobKindChoices.COMMAND: names.RUN_COMMAND,
    JobKindChoices.COLLECT: names.COLLECT_FACTS,
    JobKindChoices.PUSH: names.PUSH_FILES,
    JobKindChoices.FETCH: names.FETCH_FILE,
}


class HostTaskStateChoices(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    #: Fetch: the host has sent its file; the server is writing it to its folder.
    STORING = "storing", "storing on the server"
    OK = "ok", "ok"
    FAILED = "failed", "failed (non-zero exit)"
    TIMEOUT = "timeout", "timeout"
    CANCELLED = "cancelled", "cancelled"
    UNREACHABLE = "unreachable", "unreachable"
    LOST = "lost", "lost"
    ERROR = "error", "error"

    @classmethod
    def terminal(cls) -> frozenset[str]:
        return frozenset(
            {cls.OK, cls.FAILED, cls.TIMEOUT, cls.CANCELLED, cls.UNREACHABLE, cls.LOST, cls.ERROR}
        )

    @classmethod
    def active(cls) -> frozenset[str]:
        return frozenset({cls.PENDING, cls.RUNNING, cls.STORING})

    @classmethod
    def inferred(cls) -> frozenset[str]:
        """End states the server concludes on its own (final: a late result is kept beside)."""
        return frozenset({cls.UNREACHABLE, cls.LOST})

    @classmethod
    def reported(cls) -> frozenset[str]:
        """End states an agent's report can bring (wire.messages.Outcome)."""
        return frozenset(
            {cls.OK, cls.FAILED, cls.TIMEOUT, cls.CANCELLED, cls.ERROR, cls.UNREACHABLE}
        )


_S = HostTaskStateChoices

#: Every move a host task's state may make: from -> the states it may go to. cmdb.jobs.lifecycle
#: refuses (and logs) any other; the callers say which of these they mean (``only_from``).
TRANSITIONS: dict[str, frozenset[str]] = {
    # Started by its agent, reported at once (a fetch's file may come before the notice),
    # never picked up, cancelled before it started, or not sent at all.
    # never picked up (the server holds its claim), taken by an agent that then died.
    _S.PENDING: frozenset({_S.RUNNING, _S.STORING, _S.UNREACHABLE, _S.LOST, *_S.reported()}),
    # Reported, or its agent died; a fetch's host sent its file.
    _S.RUNNING: frozenset({_S.STORING, _S.LOST, *_S.reported()}),
    # The server stored the file (ok), could not (error), did not in time (lost), or the
    # operator cancelled it meanwhile.
    _S.STORING: frozenset({_S.OK, _S.ERROR, _S.LOST, _S.CANCELLED}),
    # Provably never started: the server took its run-once claim (cmdb.jobs.sweeps).
    _S.UNREACHABLE: frozenset(),
    # Final too: a result that comes after is kept beside it (late_state), not in its place.
    # Only the server's own storing of a fetched file it gave up on may still end it.
    _S.LOST: frozenset({_S.OK, _S.ERROR}),
    # A result that raced with the cancel, or the agent's own word on a cancel it honoured.
    _S.CANCELLED: frozenset({_S.STORING, *(_S.reported() - {_S.UNREACHABLE})}),
    # What the host reported is final.
    _S.OK: frozenset(),
    _S.FAILED: frozenset(),
    _S.TIMEOUT: frozenset(),
    _S.ERROR: frozenset(),
}


#: Celery result state per host task state. A command that exited non-zero still ran: SUCCESS,
#: with the exit code in the result, as Salt and Ansible report it.
CELERY_STATE = {
    HostTaskStateChoices.PENDING: celery_states.PENDING,
    HostTaskStateChoices.RUNNING: celery_states.STARTED,
    HostTaskStateChoices.STORING: celery_states.STARTED,
    HostTaskStateChoices.OK: celery_states.SUCCESS,
    HostTaskStateChoices.FAILED: celery_states.SUCCESS,
    HostTaskStateChoices.TIMEOUT: celery_states.FAILURE,
    HostTaskStateChoices.CANCELLED: celery_states.REVOKED,
    HostTaskStateChoices.UNREACHABLE: celery_states.FAILURE,
    HostTaskStateChoices.LOST: celery_states.FAILURE,
    HostTaskStateChoices.ERROR: celery_states.FAILURE,
}
