"""The fault suite's own fleet and its instruments: markers, a watch on host tasks, processes.

Every command the suite dispatches appends lines to a marker file of its own when it starts and
when it ends (``$FAULTS_HOST start|end <epoch>``), so what ran on the "host" can be compared
with what the server recorded, whatever the server says.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from deploy.local import ROOT, Fleet, free_port, stop_group
from wire import signing

#: Every agent of the suite is on 127.14.x.y (issue 14): no test or bench uses that range.
SUBNET = "127.14.0.0/16"
#: A command that starts more than this many seconds after its task's reach deadline is late:
#: the small clock slack agents are documented to allow (wire.signing.DEADLINE_SLACK).
LATE_SLACK = float(signing.DEADLINE_SLACK)
#: Seconds a task ends within once the suite's bounded waits start; past them it is stuck.
SETTLE = 25.0
#: Environment the suite must not inherit: its processes use its own broker, database and keys.
FOREIGN = ("REDIS_URL", "DATABASE_URL", "CMDB_RUN_DIR", "CMDB_SIGNING_KEY", "CMDB_AGENT_PUBKEY",
           "CMDB_FETCH_DIR", "CMDB_AUTO_ACCEPT", "CMDB_SPOOL_DIR")  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate, timeout: float, interval: float = 0.1):
    """The first true value of ``predicate()`` within ``timeout`` s, else None (never raises:
    a fault scenario reports what did not happen instead of stopping)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class FaultFleet(Fleet):
    """A Fleet on a broker, database and signing key of its own, under a temporary folder.

    The broker keeps an append-only file, so a Redis killed and started again on the same
    folder and port comes back with its queues (redis_restart needs that; the other scenarios
    do not notice it).
    """

    def __init__(self, run_dir: Path):
        self.port = free_port()
        own = {
            "REDIS_URL": f"redis://127.0.0.1:{self.port}/0",
            "DATABASE_URL": f"sqlite:///{run_dir / 'faults.sqlite3'}",
            # The suite's own agents, on this machine, are accepted as they come.
            "CMDB_AUTO_ACCEPT": SUBNET,
            # Collections would be work in flight the scenarios do not count.
            "CMDB_COLLECT_ON_START": "0",
            "CMDB_LOGLEVEL": os.environ.get("CMDB_LOGLEVEL", "INFO"),
        }
        super().__init__(run_dir, own)
        # Fleet starts from this process's environment: drop what would point the suite's
        # processes at somebody else's broker, database or keys (a test run's, say).
        for name in FOREIGN:
            if name not in own and name != "CMDB_RUN_DIR":
                self.env.pop(name, None)
        self.markers = run_dir / "markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        #: Process groups the suite has stopped (SIGSTOP): thawed before anything is stopped.
        self.frozen: set[str] = set()

    def start_redis(self, *args, **kwargs) -> subprocess.Popen:
        return super().start_redis(*args, persist=True, **kwargs)

    def start_agent(self, ip: str, concurrency: int = 2, extra_env: dict | None = None):
        # FAULTS_HOST: the commands' marker lines say which host ran them (every "host" is
        # this machine, so `hostname` cannot).
        return super().start_agent(ip, concurrency, {"FAULTS_HOST": ip, **(extra_env or {})})

    def pid(self, name: str) -> int | None:
        proc = self.processes.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def signal_group(self, name: str, sig: int) -> bool:
        pid = self.pid(name)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        if sig == signal.SIGSTOP:
            self.frozen.add(name)
        elif sig == signal.SIGCONT:
            self.frozen.discard(name)
        return True

    def freeze(self, name: str) -> bool:
        return self.signal_group(name, signal.SIGSTOP)

    def thaw(self, name: str) -> bool:
        return self.signal_group(name, signal.SIGCONT)

    def kill(self, name: str) -> None:
        """kill -9 of the whole group (a worker and its pool children), as a crash would."""
        self.frozen.discard(name)
        self.stop(name, signal.SIGKILL, timeout=5)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        # A stopped process never handles SIGTERM: let it run again so it can exit.
        if name in self.frozen:
            self.thaw(name)
        super().stop(name, sig, timeout)

    def stop_all(self) -> list[str]:
        for name in list(self.frozen):
            self.thaw(name)
        return super().stop_all()

    # -- commands and their markers ----------------------------------------------------------
    def command(self, token: str, body: str = "", code: int = 0) -> str:
        """A shell command that leaves start and end lines in its marker file, prints its
        token (what the server must store) and exits with ``code``."""
        marker = self.markers / token
        return (f'echo "$FAULTS_HOST start $(date +%s.%N)" >> {marker}; {body}'
                f'echo {token}; echo "$FAULTS_HOST end $(date +%s.%N)" >> {marker}; '
                f"exit {code}")  # fmt: skip

    def marks(self, token: str) -> dict[str, "Marks"]:
        """What the host(s) say ran for ``token``, by host IP."""
        out: dict[str, Marks] = {}
        path = self.markers / token
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            ip, what, at = parts
            m = out.setdefault(ip, Marks())
            (m.starts if what == "start" else m.ends).append(float(at))
        return out

    def marker_processes(self, token: str) -> list[psutil.Process]:
        """The live processes of a command (found by its token in the shell's command line)
        and their descendants: what is still running of it on the host."""
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if token in " ".join(proc.info["cmdline"] or []):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
        return [p for p in found.values() if _alive(p)]

    def kill_commands(self) -> int:
        """SIGKILL whatever a command of the suite left running (its markers name it)."""
        procs = self.marker_processes(str(self.markers))
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        return len(procs)


def _alive(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    return False


@dataclass
class Marks:
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)


def token() -> str:
    return uuid.uuid4().hex


class Watch:
    """Polls the host tasks it is given, keeping every state each was seen in, with when.

    The server keeps only the last state; a terminal state that turned into another (lost,
    then ok) is seen here.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.ids: set[str] = set()
        self.history: dict[str, list[tuple[float, str]]] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="faults-watch", daemon=True)

    def start(self) -> "Watch":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def add(self, task_ids) -> None:
        with self.lock:
            self.ids.update(task_ids)

    def _run(self) -> None:
        from django.db import close_old_connections, connection

        from cmdb.jobs.models import HostTask

        try:
            while not self.done.is_set():
                with self.lock:
                    ids = list(self.ids)
                if ids:
                    try:
                        rows = list(HostTask.objects.filter(task_id__in=ids)
                                    .values_list("task_id", "state"))  # fmt: skip
                    except Exception as exc:  # a locked SQLite file: look again
                        log(f"watch: {exc!r}")
                        rows = []
                        close_old_connections()
                    now = time.time()
                    with self.lock:
                        for task_id, state in rows:
                            seen = self.history.setdefault(task_id, [])
                            if not seen or seen[-1][1] != state:
                                seen.append((now, state))
                self.done.wait(self.interval)
        finally:
            connection.close()

    def states(self, task_id: str) -> list[str]:
        with self.lock:
            return [s for _, s in self.history.get(task_id, [])]

    def first(self, task_id: str, states) -> float | None:
        """When ``task_id`` was first seen in one of ``states``."""
        with self.lock:
            return next((t for t, s in self.history.get(task_id, []) if s in states), None)


def node_name(kind: str) -> str:
    return f"{kind}@{socket.gethostname()}"


def manage(env: dict, *args: str, timeout: float) -> tuple[int | None, float, str]:
    """``python manage.py ARGS`` in its own session, killed (group) past ``timeout``:
    (exit status or None if killed, seconds, output)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, time.monotonic() - started, out
    except subprocess.TimeoutExpired:
        stop_group(proc.pid, signal.SIGKILL, timeout=5)
        out, _ = proc.communicate()
        return None, time.monotonic() - started, out
    finally:
        if proc.poll() is None:
            stop_group(proc.pid, signal.SIGKILL, timeout=5)


def mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``path``; None, or why not (skipped scenario)."""
    if os.geteuid() != 0:
        return "needs root"
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                          str(path)], capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        return f"needs root (mount failed: {out.stderr.strip() or out.returncode})"
    return None


def unmount(path: Path) -> None:
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
