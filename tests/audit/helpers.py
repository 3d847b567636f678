"""Audit test helpers: entries at chosen times, and the triggers dropped for a tamper test."""

import contextlib
import importlib

from django.db import connection

from cmdb.audit.models import AuditEntry

TRIGGERS = importlib.import_module("cmdb.audit.migrations.0002_append_only_triggers")


def entry_at(at, action: str = "dispatch", **fields):
    """An entry appended as record() would, but at ``at`` (a past time, for retention)."""
    defaults = {"username": "alice", "via": "cli", "address": "", "action": action,
                "outcome": "ok", "kind": "command", "command": "uptime", "targets_given": [],
                "targets_resolved": [], "hosts": "", "job_id": None, "detail": {}}  # fmt: skip
    return AuditEntry.objects.append(at=at, **{**defaults, **fields})


@contextlib.contextmanager
def triggers_dropped():
    """What someone with the database's owner account can do: drop the triggers. The test's
    transaction is rolled back after it, triggers included; they are put back here anyway."""
    vendor = connection.vendor
    with connection.cursor() as cursor:
        for sql in TRIGGERS.REMOVE[vendor]:
            cursor.execute(sql)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for sql in TRIGGERS.INSTALL[vendor]:
                cursor.execute(sql)


def raw(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql.replace("{table}", AuditEntry._meta.db_table), params)
