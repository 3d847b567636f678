"""Bounded head and tail of a stream, kept in memory: what an agent's spool file gives it
(workers.runner._capture), without a file, for hundreds of hosts at once."""

from wire.messages import Stream


def decode(data: bytes) -> str:
    # As the agent: commands print anything (binary, Latin-1, a UTF-8 char cut at a boundary).
    return data.decode("utf-8", errors="replace")


class Capture:
    """The first ``head`` bytes, the last ``tail`` bytes and the true size."""

    def __init__(self, head: int, tail: int):
        self.head_max, self.tail_max = head, tail
        self.head, self.tail = bytearray(), bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_max:
            self.tail += chunk
            # Trimmed in steps, not at every chunk: a 3 MB stream copies its tail a few times.
            if len(self.tail) > 2 * self.tail_max:
                del self.tail[: -self.tail_max]

    def stream(self) -> Stream:
        if self.total <= self.head_max + self.tail_max:
            return Stream(decode(bytes(self.head + self.tail)), "", self.total, False)
        tail = self.tail[-self.tail_max :] if self.tail_max else b""
        return Stream(decode(bytes(self.head)), decode(bytes(tail)), self.total, True)
