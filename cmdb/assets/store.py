"""Storing a collection: the raw report, the asset rows, the host summary and what changed."""

import json
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from cmdb.assets.choices import ChangeActionChoices as Action
from cmdb.assets.diff import diff
from cmdb.assets.models import Asset, Change, FactReport, HostFacts
from cmdb.assets.normalize import normalize, reported_kinds, summary


def store_report(host, report: dict, job_id=None) -> list[Change]:
    """Replace ``host``'s asset rows with ``report``'s; record what changed. Returns the changes.

    Unchanged facts write no history; the first collection of a host is one "discovered" entry,
    not an "added" per disk and NIC.
    """
    facts = report.get("facts") or {}
    now = timezone.now()
    collected = report.get("collected_at")
    collected_at = datetime.fromtimestamp(float(collected), tz=UTC) if collected else now
    rows = {(r.kind, r.key): r for r in normalize(facts)}
    with transaction.atomic():
        FactReport.objects.create(
            host=host, job_id=job_id, collected_at=collected_at, report=report,
            size_bytes=len(json.dumps(report)), errors=report.get("errors") or {},
        )  # fmt: skip
        current = {(a.kind, a.key): a for a in Asset.objects.filter(host=host)}
        first = not current and not Change.objects.filter(host=host).exists()
        entries = diff(
            {ident: a.data for ident, a in current.items()},
            {ident: r.data for ident, r in rows.items()},
            reported_kinds(facts),
        )
        if first:
            changes = [Change(host=host, job_id=job_id, time=now, action=Action.DISCOVERED,
                              new={"assets": len(rows)})]  # fmt: skip
        else:
            changes = [
                Change(host=host, job_id=job_id, time=now, action=e.action, kind=e.kind, key=e.key,
                       field=e.field, old=e.old, new=e.new)
                for e in entries
            ]  # fmt: skip
        removed = [current[(e.kind, e.key)].pk for e in entries if e.action == Action.REMOVED]
        Asset.objects.filter(pk__in=removed).delete()
        to_update, to_create = [], []
        for ident, row in rows.items():
            asset = current.get(ident)
            if asset is None:
                to_create.append(
                    Asset(
                        host=host,
                        kind=row.kind,
                        key=row.key,
                        data=row.data,
                        metrics=row.metrics,
                        first_seen=now,
                        updated=now,
                    )
                )
            else:
                asset.data, asset.metrics, asset.updated = row.data, row.metrics, now
                to_update.append(asset)
        Asset.objects.bulk_create(to_create)
        Asset.objects.bulk_update(to_update, ["data", "metrics", "updated"])
        Change.objects.bulk_create(changes)
        HostFacts.objects.update_or_create(
            host=host, defaults={"collected_at": collected_at, **summary(facts)}
        )
    return changes
