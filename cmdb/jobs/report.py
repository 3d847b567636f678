"""How a job and its host tasks are shown on a terminal (pure: no queries): the server's rows
as the plain dicts client.report formats, so that the thin client, from the API's JSON, prints
the same; as JSON, they are cmdb.jobs.documents'."""

from collections import Counter

from client import report as shown
from client.grouping import ip_order, summary_line
from client.text import printable
from client.text import stream_text as _text
from cmdb.jobs import rollout
from cmdb.jobs.models import HostTask, Job

__all__ = ["format_job", "format_task", "ip_order", "printable", "row", "summary",
           "summary_of"]  # fmt: skip

E_OUTPUT_HIDDEN = shown.E_OUTPUT_HIDDEN


def _time(value) -> str | None:
    return None if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


def row(task: HostTask, output: bool = True) -> dict:
    """A host task as client.report and client.export take it (the API's keys)."""
    late = {"state": task.late_state, "received_at": _time(task.late_at)}
    return {
        "ip": task.ip,
        "task_id": task.task_id,
        "state": task.state,
        "exit_code": task.exit_code,
        "duration": task.duration,
        "started_at": _time(task.started_at),
        "finished_at": _time(task.finished_at),
        "error": task.error,
        "late": late if task.late_state else None,
        "stdout": task.stream("stdout") if output else None,
        "stderr": task.stream("stderr") if output else None,
    }


def job_row(job: Job) -> dict:
    return {"id": str(job.pk), "command": job.command, "dispatch_error": job.dispatch_error,
            "rolling": rollout.summary(job.params)}  # fmt: skip


def stream_text(task: HostTask, name: str) -> str:
    return _text(task.stream(name))


def format_task(task: HostTask, output: bool = True) -> str:
    """``output``: with the host's output (stdout, stderr), as the API shows it to a reader
    with jobs.view_output; else a line says it is not shown."""
    return shown.format_host(row(task), output)


def summary(tasks: list[HostTask]) -> str:
    return summary_of(Counter(t.state for t in tasks))


def summary_of(counts: dict[str, int]) -> str:
    """Host tasks per state, as "9800 ok, 200 failed" (as the database counts them)."""
    return summary_line(counts)


def format_job(job: Job | None, tasks: list[HostTask], hidden: int = 0, output: bool = True,
               grouped: bool = True, states=()) -> str:  # fmt: skip
    """``tasks``: those shown (the hosts the reader may view); ``hidden``: how many others
    the job has, said so that the count is not taken for the whole; ``grouped``: hosts alike
    as one block; ``states``: only the hosts in these (the tally stays the whole job's)."""
    rows = [row(t) for t in tasks]
    counts = Counter(r["state"] for r in rows)
    return shown.format_job(None if job is None else job_row(job), shown.chosen(rows, states),
                            hidden, output, grouped, counts)  # fmt: skip
