"""Host tasks as CSV or JSON lines, one per host, for spreadsheets and scripts."""

import csv
import io
import json
from collections.abc import Iterable, Mapping

from client.grouping import ip_order
from client.text import row_ip, stream_text

#: The columns, in order (CSV's header; JSON lines' keys).
COLUMNS = ("host", "state", "exit_code", "duration", "started_at", "finished_at", "error",
           "stdout", "stderr", "task_id")  # fmt: skip
FORMATS = ("csv", "jsonl")


def flat(row: Mapping) -> dict:
    """One host task as plain values: streams as their text (a truncation said inside)."""
    out = {name: row.get(name) for name in COLUMNS}
    out["host"] = row_ip(row)
    for name in ("stdout", "stderr"):
        stream = row.get(name)
        out[name] = None if stream is None else stream_text(stream)
    return out


def _ordered(rows: Iterable[Mapping]) -> list[dict]:
    return sorted((flat(r) for r in rows), key=lambda r: ip_order(r["host"]))


def to_csv(rows: Iterable[Mapping]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in _ordered(rows):
        # A cell a spreadsheet would run as a formula (=, +, -, @) is quoted as text.
        writer.writerow({k: _not_formula(v) for k, v in row.items()})
    return buffer.getvalue()


def _not_formula(value):
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_jsonl(rows: Iterable[Mapping]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _ordered(rows))


def export(rows: Iterable[Mapping], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    return to_csv(rows) if fmt == "csv" else to_jsonl(rows)
