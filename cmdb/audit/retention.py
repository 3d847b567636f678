"""Retention: the only deletion the append-only triggers let through.

The triggers (migration 0002) refuse every UPDATE, and every DELETE but of rows older than a
cut-off that the deleting connection declares first, for the current transaction:
PostgreSQL's ``cmdb.audit_prune`` setting (``set_config(..., true)``, gone at commit), and on
SQLite a function the trigger calls, ``cmdb_audit_prune()``, registered on each of our
connections (a connection that lacks it, the sqlite3 shell, cannot delete at all). The value
is a time (delete only rows before it), "all" (`manage.py flush`, the tests' teardown) or
empty (nothing).
"""

import contextlib
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.models import AuditEntry
from cmdb.audit.trail import record

#: The setting (PostgreSQL) and function (SQLite) the triggers read.
SETTING = "cmdb.audit_prune"
SQLITE_FUNCTION = "cmdb_audit_prune"
ALL = "all"


def register_sqlite_function(sender, connection, **kwargs):
    """connection_created: give a new SQLite connection the function the trigger calls."""
    if connection.vendor != "sqlite":
        return
    connection.audit_prune = ""
    connection.connection.create_function(
        SQLITE_FUNCTION, 0, lambda: getattr(connection, "audit_prune", ""), deterministic=False
    )


@contextlib.contextmanager
def deletes_allowed(before: datetime | None, using: str = "default"):
    """Within one transaction, let DELETE take entries older than ``before`` (None: all)."""
    connection = connections[using]
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            value = ALL if before is None else before.isoformat()
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, %s, true)", [SETTING, value])
            yield
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, '', true)", [SETTING])
        else:
            connection.ensure_connection()
            # As the trigger compares: the column's own text form.
            connection.audit_prune = (
                ALL if before is None else connection.ops.adapt_datetimefield_value(before)
            )
            try:
                yield
            finally:
                connection.audit_prune = ""


def prune(keep_days: float | None = None, now: datetime | None = None) -> int:
    """Delete the entries older than the retention (CMDB_AUDIT_KEEP_DAYS; 0 keeps all), and
    record that as an entry of its own; return how many went.

    Deleted by sequence, never leaving a hole: only entries before the first one kept, which
    is the first at or after the cut-off. The chain then verifies from the first entry left,
    and the prune entry says which one that is (cmdb.audit.verify).
    """
    keep_days = settings.CMDB["AUDIT_KEEP_DAYS"] if keep_days is None else keep_days
    if keep_days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=keep_days)
    with deletes_allowed(cutoff):
        kept = AuditEntry.objects.filter(at__gte=cutoff).order_by("seq").first()
        old = AuditEntry.objects.filter(at__lt=cutoff)
        if kept is not None:
            old = old.filter(seq__lt=kept.seq)
        count = old.count()
        if count:
            old.delete()
            record(None, AuditActionChoices.PRUNE, detail={
                "before": cutoff.isoformat(), "deleted": count, "keep_days": keep_days,
                "kept_from": kept.seq if kept else None,
            })  # fmt: skip
    return count
