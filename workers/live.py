"""A running command's output, sent to the server while it runs (wire.messages.Output).

Short commands pay nothing: the first chunk goes out only at the first flush (FLUSH_EVERY in),
so a command that has ended by then sends none, and its result alone carries its output. Later
chunks go out at most every FLUSH_EVERY seconds, each at most CHUNK_BYTES per stream: a command
writing faster than that has the middle skipped (the chunks' offsets say where), except the
first ``keep`` bytes of each stream, sent whole because the operator asked (--keep-output).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable

from wire.messages import Output

logger = logging.getLogger(__name__)

FLUSH_EVERY = 0.25
CHUNK_BYTES = 64 << 10
#: Bytes per message while sending what must be kept whole (a 3 MB output is a few messages).
KEEP_CHUNK_BYTES = 512 << 10
#: At most this many bytes a second of a kept output (after a first message): a fleet keeping
#: 64 MiB each must not flood the broker and the central worker at once; the rest follows.
KEEP_RATE = 4 << 20


class LiveOutput:
    """Given the spool files' fds at each of the runner's polls, sends what is new."""

    def __init__(self, send: Callable[[Output], None], task_id: str, host: str, agent: str,
                 keep: int = 0, every: float = FLUSH_EVERY, clock=time.monotonic,
                 rate: float = KEEP_RATE, sleep=time.sleep):  # fmt: skip
        self.send, self.keep, self.every, self.clock = send, max(0, keep), every, clock
        self.rate, self.sleep = rate, sleep
        self.kept = 0  # bytes of the kept part sent
        self.fields = {"task_id": task_id, "host": host, "agent": agent}
        self.start = clock()
        self.due = self.start + every
        self.sent = [0, 0]  # bytes of stdout, stderr sent (or skipped)
        self.seq = 0

    def poll(self, fds: list[int]) -> None:
        if self.clock() < self.due:
            return
        self.due = self.clock() + self.every
        self._flush(fds)

    def finish(self, fds: list[int]) -> None:
        """The command ended: what is left, if any chunk went out or the output is kept."""
        if self.seq or self.keep:
            self._flush(fds, final=True)

    def _flush(self, fds: list[int], final: bool = False) -> None:
        try:
            while True:
                parts, more = [], False
                for i, fd in enumerate(fds):
                    at, data, left = self._take(i, fd)
                    parts += [at, data]
                    more |= left
                if parts[1] or parts[3] or (final and self.seq == 0 and self.keep):
                    self.seq += 1
                    self.send(Output(**self.fields, seq=self.seq,
                                     elapsed=round(self.clock() - self.start, 3),
                                     stdout_at=parts[0], stdout=parts[1],
                                     stderr_at=parts[2], stderr=parts[3]))  # fmt: skip
                if not more:
                    return
                ahead = self.kept - KEEP_CHUNK_BYTES - self.rate * (self.clock() - self.start)
                if ahead > 0:  # over the rate: the next poll goes on (the end waits for it)
                    if not final:
                        return
                    self.sleep(ahead / self.rate)
        except Exception:
            # Live output is a courtesy: the command and its result go on without it.
            logger.warning("could not send output of %s", self.fields["task_id"], exc_info=True)

    def _take(self, i: int, fd: int) -> tuple[int, str, bool]:
        """(offset, base64 bytes, whether more of the kept part is left) of stream ``i``."""
        size, at = os.fstat(fd).st_size, self.sent[i]
        if at < self.keep:
            end = min(size, self.keep, at + KEEP_CHUNK_BYTES)
            data = os.pread(fd, end - at, at) if end > at else b""
            self.sent[i] = at + len(data)
            self.kept += len(data)
            return at, base64.b64encode(data).decode(), self.sent[i] < min(size, self.keep)
        if size - at > CHUNK_BYTES:
            at = size - CHUNK_BYTES  # the middle is skipped: the chunk's offset says so
        data = os.pread(fd, min(size - at, CHUNK_BYTES), at) if size > at else b""
        self.sent[i] = at + len(data)
        return at, base64.b64encode(data).decode(), False
