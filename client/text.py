"""A host task's output as a terminal shows it: control characters escaped, truncation said."""

from collections.abc import Mapping

#: Control characters a host's output must not send to the operator's terminal (escape
#: sequences can set the clipboard, rewrite lines, retitle windows): all of C0 but newline
#: and tab, DEL and C1. They are shown as \x1b and the like instead.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]
             if c not in (0x0A, 0x09)}  # fmt: skip


def printable(text: str) -> str:
    return text.translate(_CONTROLS)


def stream_text(stream) -> str:
    """A stream as the API gives it ({"head", "tail", "bytes", "truncated"}), or plain text,
    or None (not shown, or none): the text, with a line where the middle was not kept."""
    if stream is None:
        return ""
    if isinstance(stream, str):
        return stream
    head, tail = stream.get("head") or "", stream.get("tail") or ""
    if not stream.get("truncated"):
        return head
    total = stream.get("bytes") or 0
    hidden = total - len(head.encode()) - len(tail.encode())
    marker = (
        f"\n[... output truncated: {total:,} bytes in all, {max(hidden, 0):,} "
        f"bytes in the middle not kept ...]\n"
    )
    return head + marker + tail


def with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def row_ip(row: Mapping) -> str:
    """The host of a row: ``ip`` (the server's rows) or ``host`` (the API's task document)."""
    return str(row.get("ip") or row.get("host") or "")


def row_output(row: Mapping) -> str:
    """What is printed under a host (or a group of them): the error, a late result, stdout,
    then stderr after a "[stderr]" line."""
    lines = []
    if row.get("error"):
        lines.append(f"[{row.get('state') or ''}] {printable(str(row['error']))}\n")
    late = row.get("late")
    if late:
        lines.append(f"[late result] {late.get('state')}, received {late.get('received_at')} "
                     "after that verdict; what the host said follows\n")  # fmt: skip
    lines.append(with_newline(printable(stream_text(row.get("stdout")))))
    stderr = printable(stream_text(row.get("stderr")))
    if stderr:
        lines.append("[stderr]\n" + with_newline(stderr))
    return "".join(lines)
