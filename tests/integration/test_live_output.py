"""Live output through real agents: `run --wait` and `check_task --follow` show a command's
output while it runs, believe only chunks the host signed, and keep whole outputs on request."""

import base64
import os
import subprocess
import sys
import threading
import time

import pytest
from django.conf import settings

from cmdb.jobs.models import HostTask
from tests.support.api import make_user, token_client
from tests.support.cli import ID_LINE, dispatch
from tests.support.factories import from_host, make_host
from tests.support.fleet import (
    AGENT_IPS,
    ROOT,
    agent_private_key,
    dropped_counts,
    wait_dropped,
)
from wire import names
from wire.messages import Output

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

SLOW = "for i in 1 2 3 4 5; do echo line $i; sleep 1; done"


@pytest.fixture
def hosts(fleet):
    return [make_host(ip) for ip in AGENT_IPS]


class Lines:
    """A manage.py process whose stdout lines are read as they come, with when each came."""

    def __init__(self, process_env, *args):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT, env={**os.environ, **process_env}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(5)
        self.ended = time.monotonic()
        return code

    def first(self, text: str) -> float:
        return next(at for at, line in self.lines if text in line)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def assert_streamed(lines: Lines, ip: str):
    out = lines.text()
    for i in range(1, 6):
        shown = [line for _, line in lines.lines if line.endswith(f"| line {i}")]
        assert len(shown) == 1, out  # once: from the chunks, not again from the result
        assert shown[0].startswith(ip), out
    # Seen while the command ran: line 1 some 4 s before the command (and the follower) ended.
    assert lines.ended - lines.first("| line 1") > 2.5, out
    assert f"{ip} ok, exit 0" in out, out
    assert "1/1 hosts finished, 1 ok" in out, out


def test_run_wait_streams_output_as_it_is_produced(hosts, process_env, cli_user):
    ip = AGENT_IPS[0]
    lines = Lines(process_env, "run", SLOW, "--hosts", ip, "--wait", "--wait-timeout", "60")

    assert lines.wait() == 0, lines.text() + lines.proc.stderr.read()
    assert ID_LINE.search(lines.text())
    assert_streamed(lines, ip)


def test_check_task_follow_streams_output_and_exits_as_check_task(hosts, process_env, manage):
    ip = AGENT_IPS[1]
    job_id = dispatch(manage, "for i in $(seq 1 9); do echo line $i; sleep 1; done; exit 3", ip)
    lines = Lines(process_env, "check_task", job_id, "--follow", "--wait-timeout", "60")

    assert lines.wait() == 1, lines.text()  # finished with failures, as check_task says
    out = lines.text()
    # What came before the follower started is caught up from the stream: every line, once.
    for i in range(1, 10):
        assert out.count(f"| line {i}\n") + out.endswith(f"| line {i}") == 1, out
    assert "failed, exit 3" in out, out
    assert lines.ended - lines.first("| line 7") > 1.5, out  # seen while it ran


def test_forged_chunks_are_not_shown(hosts, process_env, manage):
    ip, other = AGENT_IPS
    job_id = dispatch(manage, "sleep 2; echo genuine", ip)
    task = HostTask.objects.get(job_id=job_id)
    lines = Lines(process_env, "check_task", job_id, "--follow", "--wait-timeout", "60")
    forged = Output(task_id=task.task_id, host=ip, agent=f"agent@{ip}", seq=1, elapsed=0.1,
                    stdout=base64.b64encode(b"FORGED\n").decode())  # fmt: skip
    unsigned = {**forged.to_wire()}
    by_other = from_host(task, forged, key=agent_private_key(other))  # another host's key
    before = dropped_counts()
    from cmdb.celery import app

    for chunk in (unsigned, by_other):
        app.send_task(names.TASK_OUTPUT, args=[chunk], queue=settings.CMDB["RESULTS_QUEUE"])
    wait_dropped("output chunk: unsigned", before)
    wait_dropped("output chunk: not signed by the host's accepted key", before)

    assert lines.wait() == 0, lines.text()
    assert "FORGED" not in lines.text()
    assert "genuine" in lines.text()


def test_keep_output_returns_3_mb_whole_by_full_and_the_api(hosts, manage, process_env):
    ip = AGENT_IPS[0]
    command = "seq 1 460000"
    want = subprocess.run(["sh", "-c", command], capture_output=True, check=True).stdout
    assert len(want) > 3_000_000
    out = manage("run", command, "--hosts", ip, "--keep-output", "--wait", "--wait-timeout", "60")
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = ID_LINE.search(out.stdout).group(1)
    task = HostTask.objects.get(job_id=job_id)
    assert task.stdout_truncated  # the database has head and tail only

    full = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check_task", task.task_id, "--full"],
        cwd=ROOT, env={**os.environ, **process_env}, capture_output=True, timeout=60,
    )  # fmt: skip
    assert full.returncode == 0, full.stderr
    assert full.stdout == want

    reader = token_client(make_user("jobs.view_hosttask", "jobs.view_job", "jobs.view_output"))
    answer = reader.get(f"/api/host-tasks/{task.task_id}/output/")
    assert answer.status_code == 200
    assert b"".join(answer.streaming_content) == want
    # Reading output takes jobs.view_output, as the task's own output does.
    blind = token_client(make_user("jobs.view_hosttask", "jobs.view_job"))
    assert blind.get(f"/api/host-tasks/{task.task_id}/output/").status_code == 403


def test_the_events_endpoint_streams_a_jobs_output(hosts, manage):
    ip = AGENT_IPS[1]
    out = manage("run", "echo one; sleep 1; echo two", "--hosts", ip, "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    job_id = ID_LINE.search(out.stdout).group(1)
    reader = token_client(make_user("jobs.view_job", "jobs.view_hosttask", "jobs.view_output"))

    answer = reader.get(f"/api/jobs/{job_id}/events/", HTTP_ACCEPT="text/event-stream")

    assert answer.status_code == 200
    body = b"".join(answer.streaming_content).decode()
    assert "event: output" in body and '"stdout": "one\\n"' in body, body
    assert "event: task" in body and '"state": "ok"' in body, body
    last = [line[4:] for line in body.splitlines() if line.startswith("id: ")][-1]
    again = reader.get(f"/api/jobs/{job_id}/events/", {"after": last})
    assert "event:" not in b"".join(again.streaming_content).decode()  # nothing after it
