"""Following a job on a terminal: each host's output as it comes, prefixed by the host, then
how it ended, and a progress line (rich; plain, without colours or the progress line, when the
output is not a terminal). Pure: it is given events and finished tasks, and reads nothing.

A finished task is a dict as the API shows one (``ip``, ``state``, ``exit_code``, ``duration``,
``error``, ``stdout``/``stderr`` as {"head", "tail", "bytes", "truncated"}); output events are
a job stream's (cmdb.jobs.live): a stream's text and the byte offset it starts at. What a task's
chunks showed is not shown again from its result: only what they had not shown yet.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.text import Text

STREAMS = ("stdout", "stderr")
OK_STATES = {"ok"}
#: The most of a line without its newline held back: past it, it is shown as a line (else
#: each chunk of a command writing no newline joined a growing buffer again: O(n²)).
PARTIAL_BYTES = 4 << 10
TERMINAL = {"ok", "failed", "timeout", "cancelled", "unreachable", "lost", "error"}

#: All of C0 but newline and tab, DEL and C1: a host's output must not drive the terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
             if c not in (0x0A, 0x09)}  # fmt: skip


def printable(text: str) -> str:
    return text.translate(_CONTROLS)


def style_of(state: str) -> str:
    return "green" if state in OK_STATES else "yellow" if state == "cancelled" else "red"


class _Host:
    def __init__(self, ip: str):
        self.ip = ip
        self.seen = {s: 0 for s in STREAMS}  # bytes of each stream shown
        self.partial = {s: b"" for s in STREAMS}
        self.elapsed = 0.0
        self.done = False


class Follow:
    """Renders one job's hosts as they go; ``total``: how many hosts the job has."""

    def __init__(self, console: Console, total: int, clock=time.monotonic):
        self.console, self.total, self.clock = console, total, clock
        self.start = clock()
        self.hosts: dict[str, _Host] = {}
        self.states: dict[str, str] = {}
        self.width = 0
        self.status = None
        self.cut = False

    # --- input ---------------------------------------------------------------------------
    def output(self, event: dict) -> None:
        host = self._host(str(event.get("task")), str(event.get("host") or ""))
        if host.done:
            return  # shown whole from its result already
        host.elapsed = float(event.get("elapsed") or 0.0)
        for stream in STREAMS:
            text = event.get(stream) or ""
            if text:
                self._add(host, stream, int(event.get(f"{stream}_at") or 0), text.encode())

    def truncated(self, budget: int) -> None:
        """The job's live output went over its budget (cmdb.jobs.live): none comes after."""
        if self.cut:
            return
        self.cut = True
        said = (f"[live output stopped: the job's hosts sent over {budget:,} bytes; "
                "each host's result still shows how it ended]")  # fmt: skip
        self._print(Text(said, style="dim italic"))

    def finished(self, task_id: str, task: dict) -> None:
        host = self._host(task_id, task["ip"])
        if host.done:
            return
        host.done = True
        self.states[task_id] = task["state"]
        for stream in STREAMS:
            s = task.get(stream) or {}
            head, tail = (s.get("head") or "").encode(), (s.get("tail") or "").encode()
            total = int(s.get("bytes") or 0)
            if not s.get("truncated"):
                self._add(host, stream, 0, head)
            else:
                self._add(host, stream, 0, head)
                self._add(host, stream, max(total - len(tail), 0), tail)
            if host.partial[stream]:
                self._line(host, stream, host.partial[stream])
                host.partial[stream] = b""
        parts = [task["state"]]
        if task.get("exit_code") is not None:
            parts.append(f"exit {task['exit_code']}")
        if task.get("duration") is not None:
            parts.append(f"{task['duration']:.2f} s")
        line = Text(f"{host.ip:<{self._width(host.ip)}} ", style="bold")
        line.append(", ".join(parts), style=style_of(task["state"]))
        if task.get("error"):
            line.append(f"  {printable(task['error'])}", style=style_of(task["state"]))
        self._print(line)
        self._progress()

    # --- output --------------------------------------------------------------------------
    def _host(self, task_id: str, ip: str) -> _Host:
        if task_id not in self.hosts:
            self.hosts[task_id] = _Host(printable(ip))  # a label on a terminal, like output
        return self.hosts[task_id]

    def _width(self, ip: str) -> int:
        self.width = max(self.width, len(ip))
        return self.width

    def _add(self, host: _Host, stream: str, at: int, data: bytes) -> None:
        seen = host.seen[stream]
        if at > seen:
            if host.partial[stream]:
                self._line(host, stream, host.partial[stream])
                host.partial[stream] = b""
            self._line(host, stream, f"[... {at - seen:,} bytes not shown ...]".encode(),
                       marker=True)  # fmt: skip
            seen = at
        data = data[seen - at :]  # what was shown already is not shown again
        if not data:
            return
        host.seen[stream] = seen + len(data)
        *lines, rest = (host.partial[stream] + data).split(b"\n")
        if len(rest) > PARTIAL_BYTES:  # a line without end (binary output): shown as it goes
            lines.append(rest)
            rest = b""
        host.partial[stream] = rest
        if lines:
            self._line(host, stream, *lines)

    def _line(self, host: _Host, stream: str, *raws: bytes, marker: bool = False) -> None:
        """Lines of one host's stream, printed at once (rich costs per call, not per line)."""
        text = Text()
        out = stream == "stdout"
        for i, raw in enumerate(raws):
            if i:
                text.append("\n")
            text.append(f"{host.ip:<{self._width(host.ip)}} ", style="cyan")
            text.append(f"{host.elapsed:5.1f}s ", style="dim")
            text.append("| " if out else "! ", style="dim" if out else "red")
            text.append(printable(raw.decode("utf-8", "replace")),
                        style="dim italic" if marker else "")  # fmt: skip
        self._print(text)

    def _print(self, text: Text) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    def progress_line(self) -> Text:
        done = len(self.states)
        failed = sum(1 for s in self.states.values() if s not in OK_STATES)
        line = Text(f"{done}/{self.total} hosts finished", style="bold")
        line.append(f", {done - failed} ok", style="green")
        if failed:
            line.append(f", {failed} not ok", style="red")
        line.append(f"  {self.clock() - self.start:.1f} s", style="dim")
        return line

    def _progress(self) -> None:
        if self.status is not None:
            self.status.update(self.progress_line())

    def live(self):
        """The progress line kept at the bottom of a terminal while the job runs (a context
        manager); nothing on anything else."""
        if not self.console.is_terminal:
            return contextlib.nullcontext()
        self.status = self.console.status(self.progress_line())
        return self.status

    def tick(self) -> None:
        self._progress()

    def summary(self) -> Text:
        """The last line, on every output."""
        return self.progress_line()

    @property
    def ok(self) -> bool:
        return all(s in OK_STATES for s in self.states.values())
