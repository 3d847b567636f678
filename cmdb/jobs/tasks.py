"""Tasks run by the central worker on what agents send back through the broker."""

from celery import shared_task

from cmdb.jobs import results
from wire import names


@shared_task(name=names.STORE_RESULT, ignore_result=True)
def store_result(payload: dict) -> None:
    """Link callback of workers.run_command: ``payload`` is the agent task's return value."""
    results.store_result(payload)


@shared_task(name=names.TASK_STARTED, ignore_result=True)
def task_started(info: dict) -> None:
    results.mark_started(info)


# acks_late: a central worker that dies while storing gets the message back (finish_fetch
# does nothing twice), instead of leaving the host task to be called lost.
@shared_task(name=results.STORE_FETCHED, ignore_result=True, acks_late=True)
def store_fetched(task_id: str, payload: dict) -> None:
    """A file an agent sent for a fetch job: stored here, not in the intake, whose results
    would otherwise wait for every byte of it."""
    results.finish_fetch(task_id, payload)
