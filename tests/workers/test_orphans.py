"""workers.orphans: the sessions a dead agent left running are ended by the next one, and
nothing else is."""

import json
import subprocess
import time

import psutil
import pytest

from workers import orphans


@pytest.fixture
def records(tmp_path):
    return orphans.Records(tmp_path / "running")


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def session(command: str = "sleep 60 & sleep 60; wait") -> subprocess.Popen:
    return subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True)


def gone(proc: subprocess.Popen) -> bool:
    try:
        proc.wait(timeout=5)
        return True
    except subprocess.TimeoutExpired:
        return False


def test_a_dead_agents_session_is_killed_whole_and_reported(records):
    proc = session()
    time.sleep(0.2)  # the shell has started both sleeps
    records.add("t-1", "127.0.1.7", proc.pid, dead_pid())

    [orphan] = records.reap()

    assert gone(proc)
    assert (orphan.task_id, orphan.host) == ("t-1", "127.0.1.7")
    assert orphan.killed == 3 and "the restarted agent killed" in orphan.error
    assert records.reap() == []  # its record went with it


def test_a_live_agents_commands_are_left_alone(records):
    proc = session()
    try:
        records.add("t-2", "127.0.1.7", proc.pid, psutil.Process().pid)  # this process: alive
        assert records.reap() == []
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_reused_since_is_not_killed(records):
    proc = session("sleep 60")
    try:
        records.add("t-3", "127.0.1.7", proc.pid, dead_pid())
        path = records.path("t-3")
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "started": record["started"] - 3600}))

        [orphan] = records.reap()

        assert orphan.killed == 0 and "had ended" in orphan.error
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_an_ended_command_is_reported_as_ended(records):
    pid = dead_pid()
    records.add("t-4", "127.0.1.7", pid, dead_pid())
    [orphan] = records.reap()
    assert orphan.killed == 0 and "its result died with the agent" in orphan.error


def test_an_unreadable_record_is_removed_and_a_bad_task_id_refused(records):
    (records.folder / "junk").write_text("{not json")
    assert records.reap() == []
    assert not (records.folder / "junk").exists()
    with pytest.raises(ValueError):
        records.add("../escape", "127.0.1.7", 1, 1)
