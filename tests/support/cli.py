"""Driving the CLI as a user does: dispatch, read the job id, wait for the result."""

import json
import re

from cmdb.jobs.models import HostTask
from tests.support.fleet import wait_for

#: The line `run` (and every dispatching command) prints at once.
ID_LINE = re.compile(r"^task id: ([0-9a-f-]{36})$", re.M)


def dispatch(manage, command: str, *targets: str, extra=()) -> str:
    out = manage("run", command, "--hosts", *targets, *extra)
    assert out.returncode == 0, out.stderr
    match = ID_LINE.search(out.stdout)
    assert match, out.stdout
    return match.group(1)


def wait_job(manage, job_id: str, timeout: float = 60):
    out = manage("check_task", job_id, "--wait", "--wait-timeout", str(timeout), "--json")
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout), out.returncode


def wait_state(task_id: str, states: set[str], timeout: float = 30) -> HostTask:
    def reached():
        task = HostTask.objects.get(task_id=task_id)
        return task if task.state in states else None

    return wait_for(reached, timeout, f"host task {task_id} to reach {states}", interval=0.2)
