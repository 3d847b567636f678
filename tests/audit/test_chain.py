"""record(), the hash chain, and the triggers that make the table append-only, on the real
database of the run (SQLite, or PostgreSQL under `make test`)."""

import threading
import uuid

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from cmdb import audit
from cmdb.access.actor import Actor
from cmdb.audit.chain import GENESIS, entry_hash
from cmdb.audit.models import AuditEntry, AuditHead
from cmdb.audit.trail import MAX_COMMAND
from cmdb.audit.verify import verify
from tests.audit.helpers import TRIGGERS, raw, triggers_dropped

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="pw")


def dispatch(user, command="df -h", ips=("10.0.0.1", "10.0.0.2"), **kwargs):
    return audit.record(Actor(user, "api", "192.0.2.7"), "dispatch", kind="command",
                        command=command, targets_given={"hosts": list(ips)},
                        targets_resolved=list(ips), **kwargs)  # fmt: skip


def test_record_stores_who_from_where_what_and_on_which_hosts(alice):
    job = uuid.uuid4()
    entry = dispatch(alice, job=job)

    entry = AuditEntry.objects.get(pk=entry.pk)
    assert (entry.username, entry.via, entry.address) == ("alice", "api", "192.0.2.7")
    assert (entry.action, entry.outcome, entry.kind, entry.command) == (
        "dispatch", "ok", "command", "df -h")  # fmt: skip
    assert entry.targets_given == {"hosts": ["10.0.0.1", "10.0.0.2"]}
    assert entry.targets_resolved == ["10.0.0.1", "10.0.0.2"]
    assert entry.hosts == " 10.0.0.1 10.0.0.2 "
    assert entry.job_id == job


def test_each_entry_chains_to_the_one_before_and_the_chain_verifies(alice):
    first = dispatch(alice)
    refused = audit.record(Actor(alice, "cli"), "refused", kind="command", command="reboot",
                           detail={"reason": "10.0.0.9 is outside your grants"})  # fmt: skip
    server = audit.record(None, "cancel", job=uuid.uuid4())

    assert first.prev_hash == GENESIS
    assert refused.prev_hash == first.hash and server.prev_hash == refused.hash
    assert [first.seq + 1, first.seq + 2] == [refused.seq, server.seq]
    assert refused.outcome == "refused"
    assert (server.username, server.via) == ("", "system")
    stored = AuditEntry.objects.get(pk=refused.pk)
    assert entry_hash(stored.prev_hash, stored.hashed_fields()) == stored.hash
    assert AuditHead.objects.get().hash == server.hash
    assert verify().ok
    call_command("audit", "verify")  # exit 0


def test_a_long_command_is_capped_and_the_cut_is_said_and_nul_never_reaches_the_db(alice):
    entry = dispatch(alice, command="x" * (MAX_COMMAND + 10) + "\x00",
                     detail={"why\x00": ["a\x00b", 1e300, float("nan"), (1, 2)]})  # fmt: skip

    entry = AuditEntry.objects.get(pk=entry.pk)
    assert len(entry.command) == MAX_COMMAND
    assert entry.detail["command_chars"] == MAX_COMMAND + 11
    assert entry.detail["why\ufffd"] == ["a\ufffdb", "1e+300", "nan", [1, 2]]
    assert verify().ok  # what was stored is what was hashed


def test_an_unknown_action_is_a_programming_error(alice):
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.record(Actor(alice, "cli"), "rm -rf")
    with pytest.raises(ValueError, match="unknown audit outcome"):
        audit.record(Actor(alice, "cli"), "dispatch", outcome="meh")


# --- append-only ------------------------------------------------------------------------------
def refused(fn):
    # A savepoint: on PostgreSQL a failed statement spoils the rest of the transaction.
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        fn()


def test_the_orm_can_neither_change_nor_delete_an_entry(alice):
    entry = dispatch(alice)

    def save():
        entry.command = "harmless"
        entry.save()

    refused(save)
    refused(lambda: AuditEntry.objects.filter(pk=entry.pk).update(username="mallory"))
    refused(lambda: AuditEntry.objects.get(pk=entry.pk).delete())
    refused(lambda: AuditEntry.objects.all().delete())
    assert AuditEntry.objects.get(pk=entry.pk).command == "df -h"


def test_raw_sql_can_neither_change_nor_delete_an_entry(alice):
    entry = dispatch(alice)

    refused(lambda: raw("UPDATE {table} SET command = 'ls' WHERE id = %s", [entry.pk]))
    refused(lambda: raw("DELETE FROM {table} WHERE id = %s", [entry.pk]))
    refused(lambda: raw("DELETE FROM {table}"))
    if connection.vendor == "postgresql":
        refused(lambda: raw("TRUNCATE {table}"))
    assert AuditEntry.objects.filter(pk=entry.pk, command="df -h").exists()


def installed_triggers() -> set[str]:
    table = AuditEntry._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                           "AND tbl_name = %s", [table])  # fmt: skip
        else:
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass "
                           "AND NOT tgisinternal", [table])  # fmt: skip
        return {name for (name,) in cursor.fetchall()}


def test_the_triggers_are_there_at_the_latest_migration():
    # SQLite rebuilds a table for most schema changes, and its triggers go with it: a later
    # migration of this model must create them again, or this fails.
    expected = {
        "sqlite": {"audit_auditentry_no_update", "audit_auditentry_no_delete"},
        "postgresql": {"audit_auditentry_append_only", "audit_auditentry_no_truncate"},
    }
    assert installed_triggers() == expected[connection.vendor]
    assert TRIGGERS.INSTALL.keys() == expected.keys()


# --- what the chain catches once the triggers are gone -----------------------------------------
def broken_at() -> tuple[int, str]:
    with pytest.raises(CommandError) as caught:
        call_command("audit", "verify")
    assert caught.value.returncode == 1
    verdict = verify()
    assert str(caught.value).startswith(f"audit trail broken at entry {verdict.broken.seq} ")
    return verdict.broken.seq, verdict.broken.reason


def test_a_row_changed_behind_the_triggers_back_is_found_by_audit_verify(alice):
    entries = [dispatch(alice, command=f"echo {n}") for n in range(4)]

    with triggers_dropped():
        raw("UPDATE {table} SET command = 'echo innocent' WHERE id = %s", [entries[2].pk])
        seq, reason = broken_at()

    assert seq == entries[2].seq
    assert "changed" in reason


def test_a_row_changed_and_rehashed_breaks_the_link_of_the_next(alice):
    entries = [dispatch(alice, command=f"echo {n}") for n in range(3)]
    forged = AuditEntry.objects.get(pk=entries[1].pk)
    forged.command = "echo innocent"
    forged_hash = entry_hash(forged.prev_hash, forged.hashed_fields())

    with triggers_dropped():
        raw("UPDATE {table} SET command = %s, hash = %s WHERE id = %s",
            [forged.command, forged_hash, forged.pk])  # fmt: skip
        seq, reason = broken_at()

    assert seq == entries[2].seq
    assert "prev_hash" in reason


def test_deleted_rows_are_found_in_the_middle_and_at_the_end(alice):
    entries = [dispatch(alice, command=f"echo {n}") for n in range(4)]

    with triggers_dropped():
        raw("DELETE FROM {table} WHERE id = %s", [entries[3].pk])
        seq, reason = broken_at()
        assert seq == entries[2].seq and "last were deleted" in reason
        raw("DELETE FROM {table} WHERE id = %s", [entries[1].pk])
        seq, reason = broken_at()
        assert seq == entries[2].seq and "deleted" in reason


# --- two writers --------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_writers_appending_at_once_leave_one_unbroken_chain():
    # Threads, each with its own database connection: the web and the central worker.
    per_writer, errors = 40, []

    def write(name: str):
        try:
            for n in range(per_writer):
                audit.record(None, "dispatch", command=f"{name} {n}")
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    writers = [threading.Thread(target=write, args=(name,)) for name in ("web", "central")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)

    assert not errors
    seqs = list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 2 * per_writer + 1))
    assert verify().ok
