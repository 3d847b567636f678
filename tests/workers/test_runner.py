"""Tests for workers.runner: real /bin/sh processes, real signals, no mocks of the kernel."""

import json
import os
import resource
import signal
import subprocess
import threading
import time

import psutil
import pytest

from wire.messages import Outcome, Report, Stream
from workers.runner import RunResult, run_command


def gone(pid: int, within: float = 0.0) -> bool:
    """True when `pid` no longer runs. Orphans are reparented to init, which may never reap them
    in a container, so a zombie counts as gone."""
    end = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def read_pid(path) -> int:
    return int(path.read_text().strip())


@pytest.fixture
def run(tmp_path):
    """run_command with the spool files in tmp_path, so a runaway test cannot fill /tmp."""

    def _run(command, **kwargs):
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("spool_dir", str(tmp_path))
        return run_command(command, **kwargs)

    return _run


class Cancelled(Exception):
    """Stands in for Celery's SoftTimeLimitExceeded."""


class Unexpected(BaseException):
    """Stands in for KeyboardInterrupt and anything else not listed in `interrupts`."""


@pytest.fixture
def sigusr1_after():
    """Install a SIGUSR1 handler that raises, and send SIGUSR1 to ourselves after a delay,
    the way Celery's soft time limit interrupts a task when an operator cancels it."""
    installed = []

    def install(exc_type, delay):
        def handler(signum, frame):
            raise exc_type("SIGUSR1")

        installed.append(signal.signal(signal.SIGUSR1, handler))
        timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGUSR1))
        installed.append(timer)
        timer.start()

    yield install
    if installed:
        old, timer = installed
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGUSR1, old)


# --- exit status -----------------------------------------------------------------------------


def test_zero_exit_is_ok_with_both_streams_captured(run):
    result = run("echo hello; echo oops >&2")
    assert result.outcome == Outcome.OK == "ok"
    assert result.exit_code == 0
    assert result.stdout == Stream("hello\n", "", 6, False)
    assert result.stderr == Stream("oops\n", "", 5, False)
    assert result.error == ""
    assert isinstance(result.pid, int)


def test_nonzero_exit_is_failed_result_not_exception(run):
    result = run("echo before; exit 3")
    assert result.outcome == Outcome.FAILED
    assert result.exit_code == 3
    assert result.stdout.head == "before\n"
    assert result.error == ""


def test_killed_by_signal_is_failed_with_negative_exit_code(run):
    result = run("kill -KILL $$")
    assert result.outcome == Outcome.FAILED
    assert result.exit_code == -signal.SIGKILL
    assert result.error == "terminated by signal SIGKILL"


@pytest.mark.parametrize("command", ["", "   ", "\n\t "])
def test_empty_command_raises_value_error(run, command):
    with pytest.raises(ValueError, match="command is empty"):
        run(command)


@pytest.mark.parametrize(
    "kwargs", [{"timeout": 0}, {"head_bytes": -1}, {"tail_bytes": -1}, {"max_output_bytes": 0}]
)
def test_nonsensical_limits_raise_value_error(run, kwargs):
    with pytest.raises(ValueError):
        run("true", **kwargs)


def test_spawn_failure_is_error_result_not_exception(run, tmp_path):
    missing = tmp_path / "no-such-dir"
    result = run("echo never", cwd=str(missing))
    assert result.outcome == Outcome.ERROR
    assert result.exit_code is None
    assert result.pid is None
    assert result.error.startswith("could not start the command: ")
    assert str(missing) in result.error
    assert result.stdout.total_bytes == 0


def test_missing_spool_dir_is_error_result_not_exception(tmp_path):
    result = run_command("echo never", timeout=5, spool_dir=str(tmp_path / "nope"))
    assert result.outcome == Outcome.ERROR
    assert result.exit_code is None
    assert "could not create spool files" in result.error


# --- how the process is started --------------------------------------------------------------


def test_command_runs_in_its_own_session_and_process_group(run):
    # Fields 5 and 6 of /proc/PID/stat are the process group and the session.
    result = run("echo $$; cut -d' ' -f5,6 /proc/$$/stat")
    shell, ids = result.stdout.head.splitlines()
    pgrp, sid = ids.split()
    assert int(shell) == int(pgrp) == int(sid) == result.pid
    assert int(pgrp) != os.getpgrp()


def test_output_goes_to_files_never_pipes(run):
    result = run("readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2")
    stdin, stdout, stderr = result.stdout.head.splitlines()
    assert stdin == "/dev/null"
    for target in (stdout, stderr):
        assert not target.startswith(("pipe:", "socket:")), target
    assert stdout != stderr


def test_stdin_is_devnull_so_reading_it_does_not_hang(run):
    result = run("cat; echo done", timeout=5)
    assert result.outcome == Outcome.OK
    assert result.stdout.head == "done\n"


def test_cwd_and_env_are_passed_through(run, tmp_path):
    result = run('pwd; echo "$FOO"', cwd=str(tmp_path), env={"FOO": "bar", "PATH": "/bin"})
    assert result.stdout.head == f"{tmp_path}\nbar\n"


def test_spool_files_are_closed_on_every_path(run, tmp_path):
    me = psutil.Process()
    before = me.num_fds()
    run("echo hi")
    run("sleep 5", timeout=0.2)
    run("yes", max_output_bytes=10_000)
    run("true", cwd=str(tmp_path / "missing"))
    assert me.num_fds() == before


# --- head and tail ---------------------------------------------------------------------------


def test_large_output_does_not_deadlock_and_head_tail_are_exact(run, tmp_path):
    data = os.urandom(1_500_000).hex().encode()  # 3 MB of ASCII, far past a 64 KiB pipe buffer
    source = tmp_path / "big.txt"
    source.write_bytes(data)
    result = run(f"cat {source}; cat {source} >&2", timeout=60, head_bytes=1000, tail_bytes=700)
    assert result.outcome == Outcome.OK
    for stream in (result.stdout, result.stderr):
        assert stream.total_bytes == len(data)
        assert stream.truncated is True
        assert stream.head == data[:1000].decode()
        assert stream.tail == data[-700:].decode()


def test_memory_does_not_grow_with_output_size(run):
    # ru_maxrss is the peak in KiB: 200 MB of output must not show up in it.
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run("head -c 200000000 /dev/zero", timeout=60)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.stdout.total_bytes == 200_000_000
    assert len(result.stdout.head) == len(result.stdout.tail) == 65536
    assert peak_after - peak_before < 20_000


@pytest.mark.parametrize(
    ("size", "truncated"), [(0, False), (10, False), (15, False), (16, True), (100, True)]
)
def test_head_holds_everything_unless_output_exceeds_head_plus_tail(run, tmp_path, size, truncated):
    data = bytes(ord("a") + i % 26 for i in range(size))
    source = tmp_path / "data"
    source.write_bytes(data)
    result = run(f"cat {source}", head_bytes=10, tail_bytes=5)
    assert result.stdout.total_bytes == size
    assert result.stdout.truncated is truncated
    if truncated:
        assert result.stdout.head == data[:10].decode()
        assert result.stdout.tail == data[-5:].decode()
    else:
        assert result.stdout.head == data.decode()
        assert result.stdout.tail == ""


def test_zero_tail_bytes_keeps_only_the_head(run):
    result = run("printf 0123456789", head_bytes=4, tail_bytes=0)
    assert result.stdout == Stream("0123", "", 10, True)


# --- decoding --------------------------------------------------------------------------------


def test_invalid_utf8_is_replaced_never_raises(run):
    result = run(r"printf '\377\376abc\n'; printf '\377' >&2")
    assert result.outcome == Outcome.OK
    assert result.stdout.head == "\ufffd\ufffdabc\n"
    assert result.stdout.total_bytes == 6
    assert result.stderr.head == "\ufffd"


def test_multibyte_char_cut_at_head_and_tail_boundary_is_replaced(run):
    # "ab€yz" is 61 62 e2 82 ac 79 7a: the head ends inside the euro sign, the tail starts inside.
    result = run(r"printf 'ab\342\202\254yz'", head_bytes=3, tail_bytes=3)
    assert result.stdout.truncated is True
    assert result.stdout.head == "ab\ufffd"
    assert result.stdout.tail == "\ufffdyz"


# --- timeout ---------------------------------------------------------------------------------


def test_timeout_kills_grandchildren(run, tmp_path):
    pidfile = tmp_path / "pid"
    result = run(f"sleep 300 & echo $! > {pidfile}; sleep 300", timeout=1)
    assert result.outcome == Outcome.TIMEOUT
    assert result.error == "timed out after 1 s; killed the process group"
    assert result.exit_code == -signal.SIGTERM
    assert result.duration < 5
    assert gone(read_pid(pidfile))


def test_timeout_kills_setsid_escapees(run, tmp_path):
    # setsid(1) moves the grandchild out of our process group; killpg alone would miss it.
    pidfile = tmp_path / "pid"
    result = run(f"setsid sleep 300 & echo $! > {pidfile}; sleep 300", timeout=1)
    pid = read_pid(pidfile)
    assert result.outcome == Outcome.TIMEOUT
    assert gone(pid), "the setsid grandchild survived"


def test_timeout_kills_orphans_left_in_the_process_group(run, tmp_path):
    # The subshell exits at once, so its sleep is reparented to init: no longer a descendant
    # psutil can find, but still in our process group.
    pidfile = tmp_path / "pid"
    result = run(f"(sleep 300 & echo $! > {pidfile}); sleep 300", timeout=1)
    pid = read_pid(pidfile)
    assert result.outcome == Outcome.TIMEOUT
    assert gone(pid), "the orphaned grandchild survived"


def test_timeout_gives_orphans_in_the_group_their_grace_period(run, tmp_path):
    # The orphan cleans up on SIGTERM. The shell dies at once, but the orphan must not be
    # SIGKILLed before kill_grace has passed.
    marker = tmp_path / "cleaned"
    trap = f"trap 'sleep 0.3; echo cleaned > {marker}; exit 0' TERM"
    result = run(f"( ({trap}; while :; do sleep 0.1; done) & ); sleep 300", timeout=1)
    assert result.outcome == Outcome.TIMEOUT
    assert marker.read_text() == "cleaned\n"


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(run, tmp_path):
    # An ignored signal stays ignored across fork and exec, so both sleeps ignore SIGTERM.
    pidfile = tmp_path / "pid"
    command = f"trap '' TERM; sleep 300 & echo $! > {pidfile}; sleep 300; echo not reached"
    result = run(command, timeout=0.5, kill_grace=0.5)
    assert result.outcome == Outcome.TIMEOUT
    assert result.exit_code == -signal.SIGKILL
    assert 1.0 <= result.duration < 5
    assert gone(read_pid(pidfile))


def test_duration_comes_from_clock_and_timestamps_from_wallclock(run):
    ticks = iter(range(0, 10_000, 10))  # a fake monotonic clock: 10 s pass per look at it
    result = run("sleep 30", timeout=25, clock=lambda: next(ticks), wallclock=lambda: 1234.5)
    assert result.outcome == Outcome.TIMEOUT
    assert result.error == "timed out after 25 s; killed the process group"
    assert result.started_at == result.finished_at == 1234.5
    assert result.duration % 10 == 0 and result.duration >= 30


# --- cancellation and other interrupts ---------------------------------------------------------


def test_interrupt_cancels_and_returns_partial_output(run, tmp_path, sigusr1_after):
    pidfile = tmp_path / "pid"
    sigusr1_after(Cancelled, 0.5)
    began = time.monotonic()
    result = run(f"echo partial; sleep 30 & echo $! > {pidfile}; wait", interrupts=(Cancelled,))
    assert time.monotonic() - began < 10
    assert result.outcome == Outcome.CANCELLED
    assert result.error == "cancelled by operator"
    assert "partial" in result.stdout.head
    assert gone(read_pid(pidfile))
    assert gone(result.pid)


def test_other_exceptions_kill_the_tree_and_reraise(run, tmp_path, sigusr1_after):
    pidfile = tmp_path / "pid"
    sigusr1_after(Unexpected, 0.5)
    with pytest.raises(Unexpected):
        run(f"sleep 30 & echo $! > {pidfile}; sleep 30", interrupts=(Cancelled,))
    assert gone(read_pid(pidfile))


# --- output limit ----------------------------------------------------------------------------


def test_output_limit_kills_the_tree(run):
    began = time.monotonic()
    result = run("yes", max_output_bytes=100_000)
    assert time.monotonic() - began < 10
    assert result.outcome == Outcome.ERROR
    assert result.error == "output exceeded 100000 bytes; killed"
    assert result.stdout.total_bytes > 100_000
    assert result.stdout.head.startswith("y\ny\n")
    assert result.exit_code is not None and result.exit_code < 0


def test_output_limit_counts_stdout_and_stderr_together(run):
    result = run(
        "head -c 60000 /dev/zero; head -c 60000 /dev/zero >&2; sleep 30", max_output_bytes=100_000
    )
    assert result.outcome == Outcome.ERROR
    assert result.stdout.total_bytes == result.stderr.total_bytes == 60_000


# --- what a normal exit leaves alone -------------------------------------------------------------


def test_background_children_survive_a_normal_exit(run):
    result = run("sleep 30 > /dev/null 2>&1 & echo $!", timeout=5)
    pid = int(result.stdout.head)
    try:
        assert result.outcome == Outcome.OK
        assert not gone(pid), "a daemon started by the command was killed"
    finally:
        os.kill(pid, signal.SIGKILL)


def test_daemon_holding_the_output_open_does_not_block_the_result(run):
    # The daemon keeps our stdout file open; with a pipe, reading to EOF would wait 30 s.
    began = time.monotonic()
    result = run("sleep 30 & echo $!", timeout=20)
    pid = int(result.stdout.head)
    os.kill(pid, signal.SIGKILL)
    assert result.outcome == Outcome.OK
    assert time.monotonic() - began < 5


# --- serialisation ---------------------------------------------------------------------------


def test_a_run_travels_as_a_report_through_json_and_back(run):
    result = run("echo out; echo err >&2; exit 1")
    fields = {name: getattr(result, name) for name in RunResult.__dataclass_fields__}
    # Every field of the runner's result has its place in the report the agent sends.
    report = Report(task_id="t-1", **fields)

    data = json.loads(json.dumps(report.to_wire()))

    assert Report.from_wire(data) == report
    assert type(data["outcome"]) is str and data["outcome"] == "failed"
    assert data["exit_code"] == 1
    assert data["stdout"] == {"head": "out\n", "tail": "", "total_bytes": 4, "truncated": False}
    assert data["stderr"] == result.stderr.to_wire()


def test_cancel_check_stops_the_command_and_keeps_partial_output(tmp_path):
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) >= 2

    started = time.monotonic()
    result = run_command(
        "echo partial; sleep 30", timeout=60, cancelled=cancelled, cancel_every=0.1,
        spool_dir=str(tmp_path),
    )  # fmt: skip

    assert result.outcome == Outcome.CANCELLED
    assert result.error == "cancelled by operator"
    assert result.stdout.head == "partial\n"
    assert time.monotonic() - started < 10


# --- a spool that fills up ------------------------------------------------------------------


@pytest.fixture
def tiny_spool(tmp_path):
    """A 256 KiB tmpfs as the spool (root only: mounting needs it)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs takes root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield str(folder)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_spool_that_fills_up_is_said_not_hidden(run, tiny_spool):
    # dd is refused the writes that do not fit, says so on stderr (refused too), and the
    # shell exits 0: only the free space tells.
    result = run("dd if=/dev/zero bs=1k count=2000 2>/dev/null; true", spool_dir=tiny_spool)

    assert result.outcome == Outcome.OK and result.exit_code == 0
    assert result.stdout.total_bytes < 2_000_000
    assert result.error.startswith("output incomplete: the spool's filesystem")
    assert "may be lost" in result.error


def test_a_roomy_spool_says_nothing(run):
    result = run("dd if=/dev/zero bs=1k count=2000 2>/dev/null")
    assert result.error == "" and result.stdout.total_bytes == 2_048_000
