"""SSH to hosts from one asyncio loop (a thread of its own): hundreds of hosts at once, each
connection kept for a while and reused by the next task for that host (a job's tasks for one
host, a rolling job's batches), a connect timeout per host.

Host keys are the ones `manage.py hosts trust` recorded, and only those: asyncssh is given
exactly that key as the host's known key, so a host presenting another is refused
(HostKeyNotVerifiable), never added. Only public-key authentication, with the server's key.
"""

import asyncio
import concurrent.futures
import contextlib
import hashlib
import math
import secrets
import shlex
import threading
import time
from dataclasses import dataclass

import asyncssh

from gateway import placing
from gateway.capture import Capture
from wire.messages import Outcome

E_NOT_TRUSTED = "no host key recorded for {ip}: run `manage.py hosts trust {ip}` first"
E_REFUSED = "connection refused ({ip}:{port})"
E_CONNECT_TIMEOUT = "timed out connecting to {ip}:{port} after {timeout:g} s"
E_AUTH = "authentication failed for user {user!r} on {ip}:{port} (is the key from " \
    "`manage.py ssh_key --public` in its authorized_keys?)"  # fmt: skip
E_KEY_CHANGED = (
    "host key changed: {ip}:{port} presented a key other than the one recorded ({recorded}); "
    "refused (check the host, then `manage.py hosts trust {ip} --replace`)"
)
E_CONNECT = "could not connect to {ip}:{port}: {reason}"
E_LOST = "the SSH connection to {ip} was lost while the command ran: {reason}"
E_TIMEOUT = "timed out after {timeout:g} s; killed the process group {pgid} on the host"
E_CANCELLED = "cancelled by operator; killed the process group {pgid} on the host"
E_OUTPUT_LIMIT = "output exceeded {limit} bytes; killed the process group {pgid} on the host"
E_SIGNALLED = "terminated by signal {name}"
E_FETCH_TOO_BIG = "{path} sent more than the {max_bytes:g} bytes allowed: not kept"
#: Bytes read at a time over SFTP.
CHUNK = 1 << 18
E_FETCH_MISMATCH = (
    "the copy of {path} has sha256 {got}, the host says {there!r}: changed "
    "while it was read? Not sent"
)
E_NO_SETSID = "the host ran the command without a process group of its own (no `setsid` there?)"

#: The command runs in a session (and process group) of its own, whose id it prints first
#: after a marker of this task's (a line the user's .bashrc prints is not taken for it), so
#: that a timeout or a cancel can kill all of it, grandchildren included, and nothing else.
#: Without a pty nothing sends SIGHUP when the connection goes, so the host sees to it too: a
#: watchdog kills the group past the timeout (and a grace), and a watcher of the channel's
#: stdin (which the gateway never closes) kills it at EOF, when the connection or the gateway
#: is gone. A child of a shell without job control is no group leader: `setsid` execs in it,
#: so $! is the new group's id. The command's stdin is /dev/null.
OUTER = r"""n=$1; limit=$2; cmd=$3
exec 3<&0
setsid /bin/sh -c 'echo "CMDB-PGID-$1 $$"; exec /bin/sh -c "$2"' cmdb-run "$n" "$cmd" </dev/null &
p=$!
exec </dev/null >/dev/null 2>&1
setsid /bin/sh -c 'sleep "$1"; kill -s KILL -- -"$2"' cmdb-dog "$limit" "$p" &
d=$!
setsid /bin/sh -c 'cat; kill -s KILL -- -"$1"' cmdb-eof "$p" <&3 &
w=$!
exec 3<&-
wait "$p"; c=$?
kill -s KILL -- -"$d" -"$w" 2>/dev/null
exit "$c"
"""
WRAPPER = "exec /bin/sh -c {outer} cmdb-wrap {nonce} {limit} {command}"
MARKER = b"CMDB-PGID-%s "
#: Seconds past the timeout after which the host's watchdog kills the group by itself.
WATCHDOG_GRACE = 15
#: Output read looking for the marker before giving up on it (the host's shell chatter).
MARKER_SEARCH = 1 << 16
KILL = "kill -TERM -- -{pgid} 2>/dev/null; sleep 1; kill -KILL -- -{pgid} 2>/dev/null; true"
#: Seconds a connection no task uses is kept open for the next.
KEEP = 30.0
READ = 1 << 16
RSA_ALGS = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]


class Unreachable(Exception):
    """The host could not be reached: nothing ran there. The text says why."""


@dataclass(frozen=True)
class Target:
    ip: str
    user: str
    port: int
    host_key: str  # OpenSSH public key line, as recorded by `hosts trust`


@dataclass
class Ran:
    outcome: str
    exit_code: int | None
    stdout: object
    stderr: object
    started_at: float
    finished_at: float
    duration: float
    error: str
    pgid: int | None


@dataclass
class _Held:
    conn: asyncssh.SSHClientConnection
    users: int = 0
    idle_since: float = 0.0


class Engine:
    def __init__(self, client_key_path: str, connect_timeout: float, keep: float = KEEP):
        self.client_key = asyncssh.read_private_key(client_key_path)
        self.connect_timeout, self.keep = connect_timeout, keep
        self.loop = asyncio.new_event_loop()
        self._held: dict[Target, _Held] = {}
        self._locks: dict[Target, asyncio.Lock] = {}
        self._thread = threading.Thread(target=self._serve, name="ssh-engine", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._close_idle())
        self.loop.run_forever()

    def submit(self, coro) -> concurrent.futures.Future:
        """Run ``coro`` on the engine's loop; from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro, timeout: float | None = None):
        return self.submit(coro).result(timeout)

    # --- connections ------------------------------------------------------------------------

    async def connect(self, target: Target) -> None:
        """Make sure a connection to ``target`` is open (Unreachable with the reason if not)."""
        async with self._lock(target):
            held = self._held.get(target)
            if held is not None and not _closed(held.conn):
                return
            conn = await self._open(target)
            self._held[target] = _Held(conn, 0, time.monotonic())

    def _lock(self, target: Target) -> asyncio.Lock:
        lock = self._locks.get(target)
        if lock is None:
            lock = self._locks[target] = asyncio.Lock()
        return lock

    async def _open(self, target: Target) -> asyncssh.SSHClientConnection:
        where = {"ip": target.ip, "port": target.port}
        if not target.host_key:
            raise Unreachable(E_NOT_TRUSTED.format(**where))
        try:
            known = asyncssh.import_public_key(target.host_key)
        except (asyncssh.KeyImportError, ValueError) as exc:
            reason = f"recorded host key: {exc}"
            raise Unreachable(E_CONNECT.format(**where, reason=reason)) from None
        alg = known.get_algorithm()
        algs = RSA_ALGS if alg == "ssh-rsa" else [alg]
        timeout = self.connect_timeout
        try:
            return await asyncio.wait_for(
                asyncssh.connect(
                    target.ip, target.port, username=target.user,
                    known_hosts=([known], [], []), server_host_key_algs=algs,
                    client_keys=[self.client_key], agent_path=None, password=None,
                    kbdint_auth=False, preferred_auth="publickey", config=[],
                    connect_timeout=timeout, login_timeout=timeout, keepalive_interval=15,
                ),
                timeout,
            )  # fmt: skip
        except ConnectionRefusedError:
            raise Unreachable(E_REFUSED.format(**where)) from None
        except TimeoutError:
            raise Unreachable(E_CONNECT_TIMEOUT.format(**where, timeout=timeout)) from None
        except asyncssh.HostKeyNotVerifiable:
            recorded = known.get_fingerprint()
            raise Unreachable(E_KEY_CHANGED.format(**where, recorded=recorded)) from None
        except asyncssh.PermissionDenied:
            raise Unreachable(E_AUTH.format(**where, user=target.user)) from None
        except (OSError, asyncssh.Error) as exc:
            reason = str(exc) or type(exc).__name__
            raise Unreachable(E_CONNECT.format(**where, reason=reason)) from None

    @contextlib.asynccontextmanager
    async def _using(self, target: Target):
        await self.connect(target)
        held = self._held[target]
        held.users += 1
        try:
            yield held.conn
        finally:
            held.users -= 1
            held.idle_since = time.monotonic()

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.keep))
            now = time.monotonic()
            for target, held in list(self._held.items()):
                if _closed(held.conn) or (held.users == 0 and now - held.idle_since > self.keep):
                    del self._held[target]
                    held.conn.close()

    def open_connections(self) -> int:
        return len(self._held)

    # --- commands ---------------------------------------------------------------------------

    async def run(self, target: Target, command: str, timeout: float, head: int, tail: int,
                  max_output: int, stop: threading.Event) -> Ran:  # fmt: skip
        """Run ``command`` on ``target`` (connected already: Engine.connect) in a process group
        of its own; killed with all of it at ``timeout``, when ``stop`` is set, or past
        ``max_output`` bytes of output."""
        started_at, start = time.time(), time.monotonic()
        out, err = Capture(head, tail), Capture(head, tail)
        nonce = secrets.token_hex(8)
        limit = math.ceil(timeout) + WATCHDOG_GRACE
        wrapped = WRAPPER.format(outer=shlex.quote(OUTER), nonce=nonce, limit=limit,
                                 command=shlex.quote(command))  # fmt: skip
        marker = MARKER % nonce.encode()
        pgid: int | None = None
        async with self._using(target) as conn:
            try:
                # stdin stays open (never written, never closed): its EOF on the host means
                # the connection is gone, and the host kills the group.
                proc = await conn.create_process(wrapped, encoding=None)
            except (OSError, asyncssh.Error) as exc:
                raise Unreachable(E_CONNECT.format(ip=target.ip, port=target.port,
                                                   reason=str(exc))) from None  # fmt: skip

            async def first_line() -> None:
                nonlocal pgid
                while out.total < MARKER_SEARCH and (line := await proc.stdout.readline()):
                    rest = line.rstrip(b"\n")
                    if rest.startswith(marker) and rest[len(marker) :].isdigit():
                        pgid = int(rest[len(marker) :])
                        return
                    out.add(line)  # not ours: the host's shell said something else first

            async def pump(stream, capture: Capture) -> None:
                while chunk := await stream.read(READ):
                    capture.add(chunk)

            async def both() -> None:
                await first_line()
                await asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err))
                await proc.wait_closed()

            reading = asyncio.ensure_future(both())
            reason = None
            try:
                while reason is None:
                    done, _ = await asyncio.wait({reading}, timeout=0.2)
                    if done:
                        break
                    if stop.is_set():
                        reason = Outcome.CANCELLED
                    elif time.monotonic() - start > timeout:
                        reason = Outcome.TIMEOUT
                    elif max_output and out.total + err.total > max_output:
                        reason = Outcome.ERROR
                if reason is None:
                    reading.result()  # a connection lost while reading raises here
            except (OSError, asyncssh.Error) as exc:
                raise RuntimeError(E_LOST.format(ip=target.ip, reason=exc)) from None
            if reason is not None:
                await self._kill(conn, pgid)
                proc.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reading, 5)
                reading.cancel()
        finished_at, duration = time.time(), time.monotonic() - start
        code, error = proc.exit_status, ""
        if reason is None:
            if proc.exit_signal:
                code, error = None, E_SIGNALLED.format(name=proc.exit_signal[0])
            outcome = Outcome.OK if code == 0 else Outcome.FAILED
            if pgid is None:
                outcome, error = Outcome.ERROR, E_NO_SETSID
        else:
            outcome, code = reason, None
            error = {
                Outcome.TIMEOUT: E_TIMEOUT.format(timeout=timeout, pgid=pgid),
                Outcome.CANCELLED: E_CANCELLED.format(pgid=pgid),
                Outcome.ERROR: E_OUTPUT_LIMIT.format(limit=max_output, pgid=pgid),
            }[reason]
        return Ran(outcome, code, out.stream(), err.stream(), started_at, finished_at, duration,
                   error, pgid)  # fmt: skip

    async def _kill(self, conn, pgid: int | None) -> None:
        if not pgid or pgid <= 1:
            return  # never "kill -- -1": that is every process the user may signal
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.run(KILL.format(pgid=pgid), stdin=asyncssh.DEVNULL), 10)

    # --- files -----------------------------------------------------------------------------

    async def push(self, target: Target, fetch, dest: str, **how) -> tuple[str, str]:
        """Put the file (or archive of a folder) ``fetch()`` brings at ``dest`` on the host, as
        gateway.placing does it: ("skipped" | "verified" | "failed", detail)."""
        async with self._using(target) as conn:
            return await placing.push(conn, fetch, dest, **how)

    async def fetch_file(self, target: Target, path: str, local: str,
                         max_bytes: float) -> str | None:  # fmt: skip
        """Copy the host's regular file ``path`` over SFTP to ``local``, its sha256 computed on
        the host and compared with the copy's; why not, or None."""
        if not path.startswith("/"):
            return f"{path!r} is not an absolute path"
        async with self._using(target) as conn:
            try:
                async with conn.start_sftp_client() as sftp:
                    attrs = await sftp.stat(path)  # links followed, as the agent's fetch
                    if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                        return f"{path} is not a regular file"
                    if attrs.size is not None and attrs.size > max_bytes:
                        return f"{path} is {attrs.size} bytes, more than the {max_bytes:g} allowed"
                    # Read no further than allowed whatever the stat said: the file may grow,
                    # or be swapped for a link to /dev/zero by a user who can change its folder.
                    async with sftp.open(path, "rb") as src:
                        attrs = await src.stat()
                        if attrs.type != asyncssh.FILEXFER_TYPE_REGULAR:
                            return f"{path} is not a regular file"
                        with open(local, "wb") as out:
                            copied = 0
                            while chunk := await src.read(CHUNK):
                                copied += len(chunk)
                                if copied > max_bytes:
                                    return E_FETCH_TOO_BIG.format(path=path, max_bytes=max_bytes)
                                out.write(chunk)
            except (OSError, asyncssh.Error) as exc:
                return f"could not read {path} over SFTP: {exc}"
            said = await conn.run(f"sha256sum -- {shlex.quote(path)}", stdin=asyncssh.DEVNULL)
        there = (said.stdout or "").split(" ")[:1]
        with open(local, "rb") as f:
            here = hashlib.file_digest(f, "sha256").hexdigest()
        if there != [here]:
            return E_FETCH_MISMATCH.format(path=path, got=here, there=there[0] if there else "")
        return None


def _closed(conn) -> bool:
    transport = getattr(conn, "_transport", None)
    return transport is None or transport.is_closing()
