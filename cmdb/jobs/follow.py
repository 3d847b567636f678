"""`run --wait` and `check_task --follow`: a job's hosts as they go, results pushed, not polled.

The job's event stream (cmdb.jobs.live) is read from its start, so nothing published since
the dispatch is missed, whenever the follower comes; the stored state is read once first, and
the tasks already ended are shown from it (their chunks then skipped: no duplicates). Each
"stored" event reads its task again. When nothing is heard for a second the unfinished tasks
are read again too: the monitor's verdicts (unreachable, lost) are not events.
"""

import os
import sys
import time

from django.db import connections
from rich.console import Console

from cmdb.access import visible
from cmdb.jobs import live, services
from cmdb.jobs.models import HostTask
from cmdb.jobs.render import Follow

EXIT_OK, EXIT_NOT_OK, EXIT_UNFINISHED = 0, 1, 3
#: How long one read of the stream waits for an event before the stored state is read again.
IDLE_MS = 1000


def add_arguments(parser) -> None:
    """run's options for this (check_task has its own --wait and --wait-timeout)."""
    parser.add_argument(
        "--wait",
        action="store_true",
        help="stream each host's output as it comes, until every host has ended "
        "(exit 0 all ok, 1 any not ok, 3 not finished by --wait-timeout)",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        help="give up waiting after this many seconds (exit 3)",
    )
    parser.add_argument(
        "--keep-output",
        action="store_true",
        help="keep each host's whole stdout and stderr on the server (up to "
        "CMDB_KEEP_OUTPUT_MAX_BYTES), for check_task --full and the API",
    )


def as_shown(task: HostTask, output: bool) -> dict:
    shown = {
        "ip": task.ip,
        "state": task.state,
        "exit_code": task.exit_code,
        "duration": task.duration,
        "error": task.error,
    }
    if output:
        shown.update({s: task.stream(s) for s in live.STREAMS})
    return shown


def console_for(stream) -> Console:
    """Colours and the progress line on a terminal only (rich decides by isatty)."""
    out = getattr(stream, "_out", stream)  # Django's OutputWrapper
    return Console(file=out, highlight=False, soft_wrap=True)


def follow(stdout, ident: str, user=None, wait_timeout: float | None = None) -> int:
    """Show the job (or host task) ``ident`` until every host has ended; its exit code."""
    found = services.find(ident, user)
    output = visible.reads_output(user)
    view = Follow(console_for(stdout), len(found.tasks))
    pending = {}
    for task in found.tasks:
        if task.is_terminal:
            view.finished(task.task_id, as_shown(task, output))
        else:
            pending[task.task_id] = task
    job_id = found.job.pk if found.job is not None else found.tasks[0].job_id
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout

    def reread(ids) -> None:
        for task in HostTask.objects.filter(task_id__in=list(ids)):
            if task.is_terminal and task.task_id in pending:
                del pending[task.task_id]
                view.finished(task.task_id, as_shown(task, output))

    cursor = "0-0"
    with live.reader() as client, view.live():
        while pending and (deadline is None or time.monotonic() < deadline):
            events = live.read(client, job_id, cursor, block_ms=IDLE_MS)
            if not events:
                reread(pending)
                view.tick()
                continue
            stored = set()
            cursor = events[-1][0]
            for _, event in events:
                if event.get("type") == "truncated" and output:
                    view.truncated(int(event.get("budget") or 0))
                if event.get("task") not in pending:
                    continue
                if event.get("type") == "output" and output:
                    # The host as the database has it, not as the event says.
                    view.output({**event, "host": pending[event["task"]].ip})
                elif event.get("type") == "task":
                    stored.add(event["task"])
            if stored:
                reread(stored)
            view.tick()
    view.console.print(view.summary())
    if pending:
        return EXIT_UNFINISHED
    return EXIT_OK if view.ok else EXIT_NOT_OK


def exit_with(command, code: int) -> None:
    """End the command with ``code``. From a shell (manage.py), at once once everything is
    written and the database connections closed: the interpreter's own teardown of Django's,
    Celery's and rich's modules took 0.3-0.6 s more on this machine, a fifth of the loop "run
    --wait" is for, with nothing left to do. Called in-process (call_command): SystemExit."""
    if not getattr(command, "_called_from_command_line", False):
        sys.exit(code)
    for stream in (command.stdout, command.stderr, sys.stdout, sys.stderr):
        stream.flush()
    connections.close_all()
    os._exit(code)
