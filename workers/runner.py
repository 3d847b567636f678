"""Run one shell command with bounded memory, a timeout and a whole-tree kill; never via pipes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from wire.messages import EMPTY_STREAM, Outcome, Stream

E_EMPTY_COMMAND = "command is empty"
E_SPOOL = "could not create spool files for the output: {reason}"
E_SPAWN = "could not start the command: {reason}"
E_TIMEOUT = "timed out after {timeout:g} s; killed the process group"
E_CANCELLED = "cancelled by operator"
E_OUTPUT_LIMIT = "output exceeded {limit} bytes; killed"
E_SIGNALLED = "terminated by signal {name}"
E_UNKILLABLE = "pid {pid} did not exit after SIGKILL (stuck in the kernel?)"
E_SPOOL_FULL = ("output incomplete: the spool's filesystem{where} filled up while the command "
                "ran ({free} bytes left), so what it wrote past {kept:,} bytes may be "
                "lost")  # fmt: skip

#: Free bytes on the spool's filesystem below which the output is said to be incomplete: a
#: write that did not fit was refused (ENOSPC) to the command, which we cannot see otherwise.
SPOOL_LOW = 64 << 10

POLL_INTERVAL = 0.05  # seconds between checks of exit status and output size
REAP_TIMEOUT = 5.0  # how long to wait for the shell after SIGKILL before giving up on it


@dataclass(frozen=True)
class RunResult:
    outcome: str
    exit_code: int | None
    stdout: Stream
    stderr: Stream
    started_at: float
    finished_at: float
    duration: float
    error: str
    pid: int | None


def run_command(
    command: str,
    *,
    timeout: float,
    head_bytes: int = 65536,
    tail_bytes: int = 65536,
    max_output_bytes: int = 1 << 30,
    interrupts: tuple[type[BaseException], ...] = (),
    cancelled: Callable[[], bool] | None = None,
    cancel_every: float = 0.5,
    cwd: str | None = None,
    env: dict | None = None,
    spool_dir: str | None = None,
    on_start: Callable[[int], None] | None = None,
    kill_grace: float = 2.0,
    live=None,
    clock=time.monotonic,
    wallclock=time.time,
) -> RunResult:
    """Run `command` with /bin/sh -c and return what happened; a failing command is a result.

    `env` replaces the environment (None inherits the agent's), as in subprocess.Popen.
    `interrupts` are exceptions that mean "the operator cancelled" (Celery's
    SoftTimeLimitExceeded): the tree is killed and a CANCELLED result is returned. Any other
    exception raised while waiting also kills the tree, and is then re-raised.
    `cancelled` is asked every `cancel_every` seconds while the command runs (the agent checks
    the operator's cancel mark in Redis); True kills the tree and returns CANCELLED.
    `on_start` is given the shell's pid (its session's id) as soon as it exists: the agent
    records it, so that its successor can end the session if the agent dies (workers.orphans).
    `live` (workers.live.LiveOutput) is shown the spool files at each poll and once the command
    has ended, and sends their new output to the server; it never raises.
    `clock` drives the timeout and `duration`; `wallclock` gives `started_at`/`finished_at`.
    """
    if not isinstance(command, str) or not command.strip():
        raise ValueError(E_EMPTY_COMMAND)
    if timeout <= 0 or head_bytes < 0 or tail_bytes < 0 or max_output_bytes <= 0:
        raise ValueError("timeout and max_output_bytes must be > 0, head/tail_bytes >= 0")

    start, started_at = clock(), wallclock()

    def failed_to_start(error: str) -> RunResult:
        return RunResult(
            outcome=Outcome.ERROR, exit_code=None, stdout=EMPTY_STREAM, stderr=EMPTY_STREAM,
            started_at=started_at, finished_at=wallclock(), duration=clock() - start,
            error=error, pid=None,
        )  # fmt: skip

    with contextlib.ExitStack() as closing:  # the spool files are closed whatever happens
        # Files, never pipes: a pipe holds 64 KiB, so wait() with PIPE deadlocks once the command
        # writes more, and communicate() keeps all of it in memory. A file also does not make us
        # wait for EOF, which a daemon the command leaves behind would hold open forever.
        try:
            spools = [
                closing.enter_context(tempfile.TemporaryFile(dir=spool_dir, buffering=0))
                for _ in range(2)
            ]
        except OSError as exc:
            return failed_to_start(E_SPOOL.format(reason=exc))
        try:
            # Own session = own process group, so the whole tree can be signalled at once, and
            # the agent's own signals (Ctrl-C, Celery's SIGUSR1) never reach the command.
            # close_fds (the default) keeps the agent's Redis sockets out of the command.
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=spools[0],
                stderr=spools[1],
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return failed_to_start(E_SPAWN.format(reason=exc))

        error = ""
        spool_free = SpoolFree(spools[0].fileno())
        try:
            if on_start is not None:
                on_start(proc.pid)
            reason = _supervise(proc, spools, start + timeout, max_output_bytes, clock,
                                cancelled, cancel_every, spool_free, live)  # fmt: skip
        except interrupts:
            reason = Outcome.CANCELLED
        except BaseException:
            _kill_tree(proc, kill_grace)
            raise
        if reason is None:
            # Normal exit. Background children it left (operators do start daemons) are NOT
            # killed: they were asked for. Their output still goes to our now-unlinked spool files.
            code = proc.returncode
            outcome = Outcome.OK if code == 0 else Outcome.FAILED
            if code < 0:
                error = E_SIGNALLED.format(name=_signal_name(-code))
        else:
            outcome = reason
            error = {
                Outcome.TIMEOUT: E_TIMEOUT.format(timeout=timeout),
                Outcome.CANCELLED: E_CANCELLED,
                Outcome.ERROR: E_OUTPUT_LIMIT.format(limit=max_output_bytes),
            }[reason]
            if not _kill_tree(proc, kill_grace):
                error += "; " + E_UNKILLABLE.format(pid=proc.pid)
        # Once more at the end: the spool files still hold everything, so a filesystem the
        # command filled between two polls is still full now.
        spool_free.look()
        if live is not None:
            live.finish([s.fileno() for s in spools])
        if spool_free.least < SPOOL_LOW:
            kept = sum(os.fstat(s.fileno()).st_size for s in spools)
            full = E_SPOOL_FULL.format(where=f" ({spool_dir})" if spool_dir else "",
                                       free=spool_free.least, kept=kept)  # fmt: skip
            error = f"{error}; {full}" if error else full
        return RunResult(
            outcome=outcome,
            exit_code=proc.returncode,
            stdout=_capture(spools[0], head_bytes, tail_bytes),
            stderr=_capture(spools[1], head_bytes, tail_bytes),
            started_at=started_at,
            finished_at=wallclock(),
            duration=clock() - start,
            error=error,
            pid=proc.pid,
        )


def _supervise(
    proc,
    spools,
    deadline,
    max_output_bytes,
    clock,
    cancelled=None,
    cancel_every=0.5,
    spool_free=None,
    live=None,
) -> Outcome | None:
    """Wait for the shell in short polls; return None on exit, else why it must be killed."""
    next_cancel_check = clock() + cancel_every
    while True:
        if spool_free is not None:
            spool_free.look()
        remaining = deadline - clock()
        if remaining <= 0:
            return Outcome.TIMEOUT
        if cancelled is not None and clock() >= next_cancel_check:
            next_cancel_check = clock() + cancel_every
            if cancelled():
                return Outcome.CANCELLED
        try:
            proc.wait(timeout=min(POLL_INTERVAL, remaining))
            return None
        except subprocess.TimeoutExpired:
            pass
        # Checked while running so a runaway `yes` cannot fill the disk; it may overshoot by
        # what the command writes in one poll interval.
        if sum(os.fstat(s.fileno()).st_size for s in spools) > max_output_bytes:
            return Outcome.ERROR
        if live is not None:
            live.poll([s.fileno() for s in spools])


class SpoolFree:
    """The least free space seen on the spool files' filesystem (for the runner's user: root
    may write into the reserved blocks)."""

    def __init__(self, fd: int):
        self.fd, self.least = fd, float("inf")
        self.root = os.geteuid() == 0

    def look(self) -> None:
        try:
            st = os.fstatvfs(self.fd)
        except OSError:
            return
        free = (st.f_bfree if self.root else st.f_bavail) * st.f_frsize
        self.least = min(self.least, free)


def _kill_tree(proc: subprocess.Popen, grace: float) -> bool:
    """SIGTERM the process group and every descendant, SIGKILL what is left after `grace`.

    Returns False if the shell could not be reaped even after SIGKILL.
    """
    if proc.returncode is not None:
        return True  # it ended by itself just now, and was reaped: leave its children alone
    pgid = proc.pid  # start_new_session made the shell the leader of its own group
    # Until we reap the shell its pid, and so the group id, cannot be reused by anybody else.
    # The tree is collected before signalling: descendants that called setsid() are outside the
    # group, and orphans still in the group are no longer descendants; both get the grace period.
    # A double-forked daemon that also called setsid() is out of reach without cgroups.
    procs = []
    with contextlib.suppress(psutil.Error):
        procs = _tree(pgid, [psutil.Process(proc.pid)])
    _signal_all(pgid, procs, signal.SIGTERM)
    try:
        _wait_dead(procs, grace)
    finally:
        # In a finally: a second interrupt during the grace period must not leave survivors.
        # Survivors may have forked since, so collect again. Sent before the shell is reaped.
        procs = _tree(pgid, [p for p in procs if _alive(p)])
        _signal_all(pgid, procs, signal.SIGKILL)
    _wait_dead(procs, REAP_TIMEOUT)  # SIGKILL is asynchronous; report only once they are gone
    try:
        proc.wait(timeout=REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    return True


def _tree(pgid: int, roots: list[psutil.Process]) -> list[psutil.Process]:
    """`roots`, all their descendants and every member of process group `pgid`, each once."""
    found = list(roots)
    for p in roots:
        with contextlib.suppress(psutil.Error):
            found += p.children(recursive=True)
    for pid in psutil.pids():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(pid) == pgid:
                found.append(psutil.Process(pid))
    return list(dict.fromkeys(found))


def _signal_all(pgid: int, procs: list[psutil.Process], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)  # psutil refuses if the pid was reused since it was collected


def _wait_dead(procs: list[psutil.Process], seconds: float) -> None:
    end = time.monotonic() + seconds  # real time: an injected fake clock must not stall a kill
    while any(_alive(p) for p in procs) and time.monotonic() < end:
        time.sleep(0.02)


def _alive(p: psutil.Process) -> bool:
    # A zombie counts as dead: orphans are reaped by init, which in some containers never happens.
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _capture(spool, head_bytes: int, tail_bytes: int) -> Stream:
    # pread, not seek+read: a daemon the command left behind shares the file offset with us, and
    # moving it would make the daemon overwrite earlier output. Only head and tail are read.
    fd = spool.fileno()
    total = os.fstat(fd).st_size
    if total <= head_bytes + tail_bytes:
        return Stream(_decode(_pread(fd, total, 0)), "", total, False)
    head = _decode(_pread(fd, head_bytes, 0))
    tail = _decode(_pread(fd, tail_bytes, total - tail_bytes))
    return Stream(head, tail, total, True)


def _pread(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _decode(data: bytes) -> str:
    # Commands print anything (binary, Latin-1, a UTF-8 char cut at the head boundary).
    return data.decode("utf-8", errors="replace")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
