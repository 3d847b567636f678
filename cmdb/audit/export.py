"""The trail as JSON lines, one entry per line, oldest first (for a SIEM)."""

import json
from collections.abc import Iterator
from datetime import datetime

from cmdb.audit.chain import HASHED, instant
from cmdb.audit.models import AuditEntry

#: The keys of each line, in this order.
FIELDS = ("id", *HASHED, "prev_hash", "hash")


def lines(since: datetime | None = None, until: datetime | None = None) -> Iterator[str]:
    rows = AuditEntry.objects.order_by("seq")
    if since is not None:
        rows = rows.filter(at__gte=since)
    if until is not None:
        rows = rows.filter(at__lt=until)
    for row in rows.values(*FIELDS).iterator(chunk_size=2000):
        row["at"] = instant(row["at"])
        row["job_id"] = str(row["job_id"]) if row["job_id"] else None
        del row["hosts"]  # the resolved targets again, as text for filtering
        yield json.dumps(row, ensure_ascii=False)
