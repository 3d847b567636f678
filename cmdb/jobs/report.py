"""How a job and its host tasks are shown on a terminal (pure: no queries); as JSON, they are
cmdb.jobs.documents'."""

from collections import Counter

from client.grouping import ip_order, summary_line
from client.text import printable, with_newline
from cmdb.jobs import rollout
from cmdb.jobs.models import HostTask, Job


def _header(task: HostTask) -> str:
    parts = [task.state]
    if task.late_state:
        parts.append(f"then a late result: {task.late_state}")
    if task.exit_code is not None:
        parts.append(f"exit {task.exit_code}")
    if task.duration is not None:
        parts.append(f"{task.duration:.2f} s")
    return f"from host {task.ip}  ({', '.join(parts)})"


def stream_text(task: HostTask, name: str) -> str:
    s = task.stream(name)
    if not s["truncated"]:
        return s["head"]
    hidden = s["bytes"] - len(s["head"].encode()) - len(s["tail"].encode())
    marker = (
        f"\n[... output truncated: {s['bytes']:,} bytes in all, {max(hidden, 0):,} "
        f"bytes in the middle not kept ...]\n"
    )
    return s["head"] + marker + s["tail"]


#: Shown instead of a host's output to a reader without jobs.view_output.
E_OUTPUT_HIDDEN = "[output not shown: reading it takes jobs.view_output]\n"


def format_task(task: HostTask, output: bool = True) -> str:
    """``output``: with the host's output (stdout, stderr), as the API shows it to a reader
    with jobs.view_output; else a line says it is not shown."""
    lines = [_header(task) + "\n"]
    if task.error:
        lines.append(f"[{task.state}] {printable(task.error)}\n")
    if task.late_state:
        lines.append(f"[late result] {task.late_state}, received {task.late_at:%Y-%m-%d %H:%M:%S} "
                     "UTC after that verdict; what the host said follows\n")  # fmt: skip
    if not output:
        return "".join([*lines, E_OUTPUT_HIDDEN])
    lines.append(with_newline(printable(stream_text(task, "stdout"))))
    stderr = printable(stream_text(task, "stderr"))
    if stderr:
        lines.append("[stderr]\n" + with_newline(stderr))
    return "".join(lines)


def summary(tasks: list[HostTask]) -> str:
    return summary_of(Counter(t.state for t in tasks))


def summary_of(counts: dict[str, int]) -> str:
    """Host tasks per state, as "9,800 ok, 200 failed" (as the database counts them)."""
    return summary_line(counts)


def format_job(job: Job | None, tasks: list[HostTask], hidden: int = 0,
               output: bool = True) -> str:  # fmt: skip
    """``tasks``: those shown (the hosts the reader may view); ``hidden``: how many others
    the job has, said so that the count is not taken for the whole."""
    out = []
    if job is not None:
        out.append(f"job {job.id}: {job.command!r} on {len(tasks)} host(s): {summary(tasks)}\n")
        if hidden:
            out.append(f"[not shown] {hidden} more host(s): you may not view them\n")
        if job.dispatch_error:
            out.append(f"[not dispatched] {job.dispatch_error}\n")
        if rolling := rollout.describe(job.params):
            out.append(f"rolling: {rolling}\n")
    ordered = sorted(tasks, key=lambda t: ip_order(t.ip))
    out.extend(format_task(t, output) for t in ordered)
    return "".join(out)
