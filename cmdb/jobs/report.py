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

__all__ = ["format_job", "format_task", "group_rows", "ip_order", "printable", "row", "row_of",
           "rows", "summary", "summary_of"]  # fmt: skip

E_OUTPUT_HIDDEN = shown.E_OUTPUT_HIDDEN


def _time(value) -> str | None:
    # As f"{value:%Y-%m-%d %H:%M:%S} UTC" writes it, at a fifth of strftime's cost.
    return None if value is None else value.isoformat(" ", "seconds")[:19] + " UTC"


#: What a row is made of: a host task's fields, as its instance or .values() has them.
ROW_FIELDS = ("ip", "task_id", "state", "exit_code", "duration", "started_at", "finished_at",
              "error", "late_state", "late_at")  # fmt: skip
STREAM_FIELDS = tuple(f"{name}_{part}" for name in ("stdout", "stderr")
                      for part in ("head", "tail", "bytes", "truncated"))  # fmt: skip
_ALL_FIELDS = frozenset(ROW_FIELDS + STREAM_FIELDS)


def row(task: HostTask, output: bool = True) -> dict:
    """A host task as client.report and client.export take it (the API's keys)."""
    values = vars(task)
    if not values.keys() >= _ALL_FIELDS:  # some deferred: loaded as the instance loads them
        values = {name: getattr(task, name) for name in _ALL_FIELDS}
    return row_of(values, output)


def rows(tasks, output: bool = True) -> list[dict]:
    """row() of each of ``tasks`` (a HostTask queryset, in its order), read as values: 10,000
    model instances were a third of a job page's time."""
    fields = ROW_FIELDS + (STREAM_FIELDS if output else ())
    return [row_of(values, output) for values in tasks.values(*fields)]


#: What client.grouping.group() reads of a row (no times: 20,000 of them to convert).
GROUP_FIELDS = ("ip", "state", "exit_code", "error", "late_state", "late_at")


def group_rows(tasks, output: bool = True) -> list[dict]:
    """Of each of ``tasks`` (a HostTask queryset), what grouping them by outcome reads."""
    fields = GROUP_FIELDS + (STREAM_FIELDS if output else ())
    found = []
    for values in tasks.values(*fields):
        late = values["late_state"]
        found.append({
            "ip": values["ip"], "state": values["state"], "exit_code": values["exit_code"],
            "error": values["error"],
            "late": {"state": late, "received_at": _time(values["late_at"])} if late else None,
            "stdout": _stream(values, "stdout") if output else None,
            "stderr": _stream(values, "stderr") if output else None,
        })  # fmt: skip
    return found


def _stream(values, name: str) -> dict:
    return {"head": values[f"{name}_head"], "tail": values[f"{name}_tail"],
            "bytes": values[f"{name}_bytes"], "truncated": values[f"{name}_truncated"]}  # fmt: skip


def row_of(values, output: bool = True) -> dict:
    """row() from a mapping of ROW_FIELDS (and STREAM_FIELDS with ``output``)."""
    late = values["late_state"]
    return {
        "ip": values["ip"],
        "task_id": values["task_id"],
        "state": values["state"],
        "exit_code": values["exit_code"],
        "duration": values["duration"],
        "started_at": _time(values["started_at"]),
        "finished_at": _time(values["finished_at"]),
        "error": values["error"],
        "late": {"state": late, "received_at": _time(values["late_at"])} if late else None,
        "stdout": _stream(values, "stdout") if output else None,
        "stderr": _stream(values, "stderr") if output else None,
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
