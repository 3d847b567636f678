"""Recent jobs as a table, from the API's job documents (GET /api/jobs/): the columns and
widths of `manage.py jobs`."""

from collections.abc import Iterable, Mapping

from client.grouping import summary_line
from client.text import printable

#: Characters of a job id shown: enough to tell jobs apart.
SHORT_ID = 8
COMMAND_WIDTH = 40
TERMINAL = ("ok", "failed", "timeout", "cancelled", "unreachable", "lost", "error")


def outcome(counts: Mapping[str, int]) -> str:
    counts = {s: n for s, n in counts.items() if n}
    if not counts:
        return "no hosts"
    if any(s not in TERMINAL for s in counts):
        return "running"
    return "ok" if set(counts) == {"ok"} else "FAILED"


def short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def created(value: str | None) -> str:
    """The API's "2026-12-03T12:28:02.436924Z" as "2026-12-03 12:28" (UTC)."""
    return (value or "")[:16].replace("T", " ")


def table(jobs: Iterable[Mapping]) -> list[str]:
    rows = [("ID", "KIND", "COMMAND", "BY", "CREATED (UTC)", "OUTCOME", "HOSTS")]
    for job in jobs:
        counts = job.get("summary") or {}
        hidden = f", {job['hidden_hosts']} not shown" if job.get("hidden_hosts") else ""
        # printable(): a command or a name with escapes is shown, not sent to the terminal.
        command = short(printable(job.get("command") or ""), COMMAND_WIDTH)
        rows.append((str(job["id"])[:SHORT_ID], job.get("kind") or "", command,
                     printable(job.get("requested_by") or ""), created(job.get("created")),
                     outcome(counts), summary_line(counts) + hidden))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
            + "  " + row[-1] for row in rows]  # fmt: skip
