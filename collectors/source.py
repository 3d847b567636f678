"""The host as collectors see it: files, commands, filesystem sizes and psutil, each failure None.

Everything a collector learns about the machine goes through one `Source`, so that tests can hand
in a fake that serves captured files, and so that "this file or tool is missing" has one meaning
(None) instead of a dozen exception types spread over the plugins.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence

import psutil

E_SHELL_STRING = "run() takes an argv list, never a shell string: {argv!r}"

#: Seconds a command may run before it is killed and counted as missing.
DEFAULT_COMMAND_TIMEOUT = 10.0
#: Seconds to wait for statvfs() or the resolver before giving up on them.
DEFAULT_CALL_TIMEOUT = 5.0

# dmidecode lives in /usr/sbin, which the PATH of a Celery worker started by hand often lacks.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Source:
    """Reads the real host. Every method returns None (or empty) when the thing is unavailable."""

    def __init__(
        self,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ):
        self.command_timeout = command_timeout
        self.call_timeout = call_timeout

    def read(self, path: str) -> str | None:
        """The text of a file, or None if it is missing, unreadable or a directory."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            # Includes EINVAL: sysfs answers it for attributes a driver does not support
            # (/sys/class/net/lo/speed), which means "unknown" just as ENOENT does.
            return None

    def run(self, argv: Sequence[str]) -> str | None:
        """The stdout of a command that exited 0, or None if missing, failed or timed out."""
        if isinstance(argv, str | bytes):
            raise TypeError(E_SHELL_STRING.format(argv=argv))
        argv = list(argv)
        if not argv:
            raise ValueError("run() needs a command")
        search_path = os.pathsep.join(filter(None, (os.environ.get("PATH"), SYSTEM_PATH)))
        executable = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=search_path)
        if executable is None:
            return None
        # The C locale keeps the output in the format the parsers were written against.
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PATH": search_path}
        try:
            proc = subprocess.run(
                [executable, *argv[1:]],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.command_timeout,
                env=env,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None  # TimeoutExpired is a SubprocessError; run() has killed the child already
        if proc.returncode != 0:
            return None
        return proc.stdout.decode("utf-8", errors="replace")

    def statvfs(self, path: str) -> os.statvfs_result | None:
        """os.statvfs(path), or None if it fails or does not answer within call_timeout."""
        # A hard NFS mount whose server is gone blocks statvfs() forever, uninterruptibly: the
        # call is left behind in a daemon thread rather than hanging the whole collection.
        return call_with_timeout(os.statvfs, path, timeout=self.call_timeout)

    def hostname(self) -> str | None:
        return socket.gethostname() or None

    def fqdn(self, hostname: str) -> str | None:
        """The resolver's canonical name for `hostname` (what `hostname -f` prints), or None."""
        # Not socket.getfqdn(): it takes the first name of a reverse lookup, which is
        # "localhost" whenever /etc/hosts maps the hostname to 127.0.0.1 after a localhost line.
        infos = call_with_timeout(
            socket.getaddrinfo,
            hostname,
            None,
            0,
            socket.SOCK_DGRAM,
            0,
            socket.AI_CANONNAME,
            timeout=self.call_timeout,
        )
        for *_, canonname, _address in infos or ():
            if canonname:
                return canonname
        return None

    def uname(self) -> os.uname_result:
        return os.uname()

    def boot_time(self) -> float | None:
        return _psutil_or_none(psutil.boot_time)

    def cpu_freq_mhz(self) -> float | None:
        """The current CPU frequency as psutil reads it from /sys, or None."""
        freq = _psutil_or_none(psutil.cpu_freq)
        return freq.current if freq and freq.current > 0 else None

    def net_if_addrs(self) -> dict:
        return _psutil_or_none(psutil.net_if_addrs) or {}

    def net_if_stats(self) -> dict:
        return _psutil_or_none(psutil.net_if_stats) or {}


# Calls still stuck from earlier collections, by (function, arguments): at most one thread is
# ever left behind per dead NFS mount, however many collections run while it stays dead.
_stuck: dict[tuple, threading.Thread] = {}
_stuck_lock = threading.Lock()


def call_with_timeout(fn: Callable, *args, timeout: float):
    """fn(*args) in a daemon thread; None if it fails or is still running at `timeout`.

    A daemon thread, not a ThreadPoolExecutor: the executor joins its threads at interpreter
    exit, so one call stuck in the kernel would keep the agent from ever exiting. A call whose
    previous attempt is still stuck is not tried again: it answers None at once.
    """
    key = (getattr(fn, "__qualname__", repr(fn)), args)
    with _stuck_lock:
        previous = _stuck.get(key)
        if previous is not None and previous.is_alive():
            return None
        _stuck.pop(key, None)
    outcome: dict = {}

    def call():
        try:
            outcome["value"] = fn(*args)
        except (OSError, ValueError):  # getaddrinfo raises UnicodeError for an over-long label
            outcome["value"] = None

    thread = threading.Thread(target=call, name=f"collectors-{key[0]}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        with _stuck_lock:
            _stuck[key] = thread
        return None
    return outcome.get("value")


def _psutil_or_none(fn: Callable):
    try:
        return fn()
    except (OSError, RuntimeError, NotImplementedError, psutil.Error):
        return None  # psutil raises these on platforms or sandboxes that lack the source file
