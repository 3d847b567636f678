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
        return frozenset({cls.PENDING, cls.RUNNING})

    @classmethod
    def inferred(cls) -> frozenset[str]:
        """End states the server concludes on its own; a real result from the agent wins."""
        return frozenset({cls.UNREACHABLE, cls.LOST})


#: Celery result state per host task state. A command that exited non-zero still ran: SUCCESS,
#: with the exit code in the result, as Salt and Ansible report it.
CELERY_STATE = {
    HostTaskStateChoices.PENDING: celery_states.PENDING,
    HostTaskStateChoices.RUNNING: celery_states.STARTED,
    HostTaskStateChoices.OK: celery_states.SUCCESS,
    HostTaskStateChoices.FAILED: celery_states.SUCCESS,
    HostTaskStateChoices.TIMEOUT: celery_states.FAILURE,
    HostTaskStateChoices.CANCELLED: celery_states.REVOKED,
    HostTaskStateChoices.UNREACHABLE: celery_states.FAILURE,
    HostTaskStateChoices.LOST: celery_states.FAILURE,
    HostTaskStateChoices.ERROR: celery_states.FAILURE,
}
