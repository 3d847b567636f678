"""The hash chain: each entry's hash covers the previous entry's hash and its own fields.

A trigger stops edits made through the application's database user; the chain makes the
edits it cannot stop (someone who drops the trigger, or writes the database file) visible:
changing, removing or reordering an entry breaks the chain at that entry.
"""

import hashlib
import json
from datetime import UTC, datetime

#: The prev_hash of the very first entry.
GENESIS = "0" * 64
#: The fields an entry's hash covers: all of them but its id, prev_hash and hash.
HASHED = ("seq", "at", "username", "via", "address", "action", "outcome", "kind", "command",
          "targets_given", "targets_resolved", "hosts", "job_id", "detail")  # fmt: skip


def instant(at: datetime) -> str:
    """A time as the chain spells it: UTC, always with microseconds (as both databases keep)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(fields: dict) -> bytes:
    """The entry's fields as one JSON text: sorted keys, no spaces, UTF-8."""
    doc = {name: fields[name] for name in HASHED}
    doc["at"] = instant(doc["at"])
    doc["job_id"] = str(doc["job_id"]) if doc["job_id"] is not None else None
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev_hash: str, fields: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(fields)).hexdigest()
