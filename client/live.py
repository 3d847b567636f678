"""`cmdb run --wait` and `cmdb check --wait`: the job's events pushed by the server as
Server-Sent Events (GET /api/jobs/{id}/events/), not polled.

The stream is read from the job's start, so nothing since the dispatch is missed. An answer
the server ends (it streams for CMDB_EVENTS_STREAM_SECONDS at most) or a connection that drops
is asked for again from the last event id read (Last-Event-ID): no gap, no line twice. While
nothing happens the server sends a comment every second; each is when the job is read again,
since the monitor's verdicts (unreachable, lost) are not events. A server without the endpoint
(404), or with all of the user's streams taken (429), is polled instead (``NotPushed``).

Streaming (a terminal, or --stream): each host's output lines as they come, prefixed by the
host and the seconds since its command started (``|`` stdout, ``!`` stderr), and how each
host ended, as manage.py run --wait prints them (cmdb/jobs/render.py, there with rich).
"""

import http.client
import json
import time
from collections.abc import Callable, Iterator

from client.api import APIError, Client, Unreachable
from client.text import printable

TERMINAL = {"ok", "failed", "timeout", "cancelled", "unreachable", "lost", "error"}
STREAMS = ("stdout", "stderr")
#: Seconds without a byte before the connection is taken for dead (the server says something
#: every second).
READ_TIMEOUT = 10.0
#: Times in a row the stream may fail to open again (0.5 s apart) before polling instead.
RECONNECTS = 5
#: The most of a line without its end held back: past it, shown as it is (binary output).
PARTIAL_BYTES = 4 << 10


class NotPushed(Exception):
    """The server will not stream this job's events to us: poll instead."""


def answer_events(api: Client, job_id: str, cursor: str) -> Iterator[tuple[str, str, dict]]:
    """(event type, its id, its data) of one answer, as they come; ("idle", "", {}) for each
    comment (the server's "still here")."""
    answer = api.stream(f"/api/jobs/{job_id}/events/",
                        {"Accept": "text/event-stream", "Last-Event-ID": cursor},
                        READ_TIMEOUT)  # fmt: skip
    try:
        kind, ident, data = "", "", []
        while line := answer.readline():
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            if not line:  # an event ends at a blank line
                parsed = _json("\n".join(data)) if data else None
                if isinstance(parsed, dict):
                    yield kind or "message", ident, parsed
                kind, data = "", []
            elif line.startswith(":"):
                yield "idle", "", {}
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    ident = value
                elif name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
    finally:
        answer.close()


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


class Shown:
    """Prints each host's output as it comes and how it ended (plain text, on ``write``)."""

    def __init__(self, write: Callable[[str], None], hosts: list[str]):
        self.write = write
        self.width = max((len(printable(h)) for h in hosts), default=0)
        self.seen: dict[tuple[str, str], int] = {}
        self.partial: dict[tuple[str, str], bytes] = {}
        self.elapsed: dict[str, float] = {}

    def output(self, host: str, event: dict) -> None:
        self.elapsed[host] = float(event.get("elapsed") or 0.0)
        for stream in STREAMS:
            text = event.get(stream) or ""
            if text:
                self._add(host, stream, int(event.get(f"{stream}_at") or 0), text.encode())

    def ended(self, host: str, task: dict) -> None:
        for stream in STREAMS:
            rest = self.partial.pop((host, stream), b"")
            if rest:
                self._lines(host, stream, [rest])
        parts = [str(task.get("state"))]
        if task.get("exit_code") is not None:
            parts.append(f"exit {task['exit_code']}")
        if task.get("duration") is not None:
            parts.append(f"{task['duration']:.2f} s")
        error = f"  {printable(str(task['error']))}" if task.get("error") else ""
        self.write(f"{printable(host):<{self.width}} {', '.join(parts)}{error}\n")

    def _add(self, host: str, stream: str, at: int, data: bytes) -> None:
        key = (host, stream)
        seen = self.seen.get(key, 0)
        if at > seen:  # the agent skipped the middle of a fast writer's output
            rest = self.partial.pop(key, b"")
            self._lines(host, stream, [rest] if rest else [])
            self._lines(host, stream, [f"[... {at - seen:,} bytes not shown ...]".encode()])
            seen = at
        data = data[seen - at :]  # what was shown already is not shown again
        if not data:
            return
        self.seen[key] = seen + len(data)
        *lines, rest = (self.partial.get(key, b"") + data).split(b"\n")
        if len(rest) > PARTIAL_BYTES:
            lines, rest = [*lines, rest], b""
        self.partial[key] = rest
        self._lines(host, stream, lines)

    def _lines(self, host: str, stream: str, raws: list[bytes]) -> None:
        mark = "|" if stream == "stdout" else "!"
        label = f"{printable(host):<{self.width}} {self.elapsed.get(host, 0.0):5.1f}s {mark} "
        self.write("".join(f"{label}{printable(raw.decode('utf-8', 'replace'))}\n"
                           for raw in raws))  # fmt: skip


def wait_pushed(api: Client, job_id: str, pending: dict[str, str], reread, limit: float | None,
                shown: Shown | None = None, clock=time.monotonic) -> None:  # fmt: skip
    """Until each of ``pending`` (task id: host) has ended, or ``limit`` seconds passed.
    ``reread()`` gives the host tasks as stored now (for the verdicts that are not events);
    NotPushed when the server does not stream them."""
    deadline = None if limit is None else clock() + limit
    cursor, failures = "0-0", 0

    def end(task_id: str, task: dict) -> None:
        host = pending.pop(task_id)
        if shown is not None:
            shown.ended(host, task)

    def read_again() -> None:
        rows = {row.get("task_id"): row for row in reread()}
        for task_id in [t for t in pending if t in rows and rows[t].get("state") in TERMINAL]:
            end(task_id, rows[task_id])
        for task_id in [t for t in pending if t not in rows]:
            pending.pop(task_id)  # not ours to view (any more): nothing will say it ended

    while pending and (deadline is None or clock() < deadline):
        try:
            for kind, ident, event in answer_events(api, job_id, cursor):
                failures = 0
                cursor = ident or cursor
                task = event.get("task")
                if kind == "output" and task in pending and shown is not None:
                    shown.output(pending[task], event)  # the host as the job said, not the event
                elif kind == "task" and task in pending and event.get("state") in TERMINAL:
                    end(task, event)
                elif kind == "idle":
                    read_again()
                if not pending or (deadline is not None and clock() >= deadline):
                    return
            # The server ended its answer: its time was up, or it saw every task it waits
            # for stored. What is stored now decides (never a loop of empty answers).
            read_again()
        except APIError as exc:
            if exc.status in (404, 429):
                raise NotPushed(str(exc)) from None
            raise
        except (Unreachable, OSError, ValueError, http.client.HTTPException) as exc:
            # Dropped (or never opened): again from the last event read, a few times.
            failures += 1
            if failures > RECONNECTS:
                raise NotPushed(str(exc)) from None
            time.sleep(0.5)
