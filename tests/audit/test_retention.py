"""Retention: the prune deletes only what is past CMDB_AUDIT_KEEP_DAYS, nothing else can, and
the chain still verifies from the first entry left."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from cmdb import audit
from cmdb.audit.models import AuditEntry
from cmdb.audit.retention import deletes_allowed, prune
from cmdb.audit.verify import verify
from tests.audit.helpers import entry_at, raw, triggers_dropped

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def days_ago(*ages: float) -> list[AuditEntry]:
    return [entry_at(NOW - timedelta(days=age), command=f"age {age}") for age in ages]


def test_prune_deletes_only_entries_past_the_retention_and_the_chain_still_verifies():
    _old, _older, kept, recent = days_ago(400, 366, 364, 1)

    assert prune(keep_days=365, now=NOW) == 2

    left = list(AuditEntry.objects.order_by("seq"))
    assert [e.pk for e in left[:2]] == [kept.pk, recent.pk]
    assert left[-1].action == "audit.prune"
    assert left[-1].detail["deleted"] == 2 and left[-1].detail["kept_from"] == kept.seq
    verdict = verify()
    assert verdict.ok, verdict.broken
    assert (verdict.first, verdict.checked) == (kept.seq, 3)
    call_command("audit", "verify")


def test_an_entry_older_than_the_retention_cannot_be_deleted_but_by_the_prune():
    (old,) = days_ago(1000)

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        raw("DELETE FROM {table} WHERE id = %s", [old.pk])


def test_a_prune_window_lets_through_only_rows_before_its_cut_off():
    (recent,) = days_ago(1)

    with (
        pytest.raises(IntegrityError, match="append-only"),
        deletes_allowed(NOW - timedelta(days=30)),
    ):
        AuditEntry.objects.filter(pk=recent.pk).delete()
    assert AuditEntry.objects.filter(pk=recent.pk).exists()


def test_the_prune_never_leaves_a_hole_when_clocks_disagree():
    # Two servers whose clocks differ: a later entry can carry an older time.
    _first, _kept, skewed = days_ago(400, 10, 500)

    assert prune(keep_days=365, now=NOW) == 1

    assert AuditEntry.objects.filter(pk=skewed.pk).exists()
    assert verify().ok


def test_entries_deleted_before_the_first_kept_one_are_found():
    days_ago(400, 300, 200, 100)
    prune(keep_days=365, now=NOW)
    second = AuditEntry.objects.order_by("seq")[0]

    with triggers_dropped():
        raw("DELETE FROM {table} WHERE id = %s", [second.pk])
        verdict = verify()

    assert not verdict.ok
    assert "last prune kept entries from" in verdict.broken.reason


def test_a_trail_with_its_first_entries_gone_and_no_prune_is_broken():
    first, *_ = days_ago(3, 2, 1)

    with triggers_dropped():
        raw("DELETE FROM {table} WHERE id = %s", [first.pk])
        verdict = verify()

    assert not verdict.ok and "no prune says so" in verdict.broken.reason


def test_manage_py_audit_prune_applies_the_setting(settings, capsys):
    days_ago(40, 20, 1)
    settings.CMDB = {**settings.CMDB, "AUDIT_KEEP_DAYS": 30}

    call_command("audit", "prune")

    assert "pruned 1 audit entries older than 30 days" in capsys.readouterr().out
    assert AuditEntry.objects.count() == 3  # two kept, and the prune's own entry


def test_keep_days_zero_keeps_everything(settings, capsys):
    days_ago(4000)
    settings.CMDB = {**settings.CMDB, "AUDIT_KEEP_DAYS": 0}

    call_command("audit", "prune")

    assert "kept for ever" in capsys.readouterr().out
    assert AuditEntry.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_flush_empties_the_trail_as_it_empties_every_table():
    # Also what every transactional test's teardown does, on both databases.
    audit.record(None, "dispatch", command="uptime")

    call_command("flush", interactive=False, verbosity=0)

    assert not AuditEntry.objects.exists()
    assert audit.record(None, "dispatch").seq == 1  # the chain starts again
