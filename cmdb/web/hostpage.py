"""A host's page: its facts as a summary, its assets as tables, its change history as a
timeline of field-by-field diffs, its recent jobs, and a form to run a command on it. A host
the user may not view is 404 (cmdb.access.visible), as in the API."""

from itertools import groupby

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, render

from cmdb.access import visible
from cmdb.assets.models import Asset, Change, HostFacts
from cmdb.jobs.models import HostTask
from cmdb.web import chrome, readable
from cmdb.web.forms import ConsoleRunForm

#: Entries of the change history shown (the newest), and jobs.
CHANGES_SHOWN = 200
JOBS_SHOWN = 15


def _summary(facts: HostFacts | None, fullest) -> list[tuple[str, str]]:
    if facts is None:
        return []
    rows = [
        ("OS", f"{facts.os} {facts.os_version}".strip()), ("kernel", facts.kernel),
        ("architecture", facts.arch), ("FQDN", facts.fqdn),
        ("CPU", f"{facts.cpu_model} ({facts.cpu_threads} threads)" if facts.cpu_model else ""),
        ("memory", readable.gib(facts.memory_bytes)),
        ("hardware", " ".join(v for v in (facts.vendor, facts.product) if v)),
        ("serial", facts.serial),
        ("fullest disk", f"{fullest[0]}: {fullest[1]:.1f}% used" if fullest else ""),
        ("facts collected", facts.collected_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]  # fmt: skip
    return [(label, value) for label, value in rows if value]


def _asset_tables(assets) -> list[dict]:
    """One table per kind: a row per asset, a column per data or metrics key any has."""
    tables = []
    for kind, members in groupby(sorted(assets, key=lambda a: (a.kind, a.key)), lambda a: a.kind):
        members = list(members)
        columns: list[str] = []
        for asset in members:
            for key in list(asset.data or {}) + list(asset.metrics or {}):
                if key not in columns:
                    columns.append(key)
        rows = []
        for asset in members:
            values = {**(asset.data or {}), **(asset.metrics or {})}
            rows.append(
                {"key": asset.key, "cells": [readable.cell(c, values.get(c)) for c in columns]}
            )
        tables.append(
            {"kind": kind, "columns": [readable.heading(c) for c in columns], "rows": rows}
        )
    return tables


def _timeline(changes) -> list[dict]:
    """Changes of one collection together (same time and job), each a field's old and new."""
    entries = []
    for (time, job_id), found in groupby(changes, lambda c: (c.time, c.job_id)):
        entries.append({"time": time, "job_id": job_id, "changes": [
            {"action": c.action, "target": f"{c.kind} {c.key}".strip(), "field": c.field,
             "old": "" if c.old is None else readable.cell(c.field, c.old),
             "new": "" if c.new is None else readable.cell(c.field, c.new)}
            for c in found]})  # fmt: skip
    return entries


@staff_member_required
@permission_required("hosts.view_host", raise_exception=True)
def host_detail(request, host_id):
    user = request.user
    host = get_object_or_404(visible.viewable_hosts(user), pk=host_id)
    facts = HostFacts.objects.filter(host=host).first()
    assets = list(Asset.objects.filter(host=host))
    changes = Change.objects.filter(host=host).order_by("-time", "kind", "key", "field")
    tasks = visible.viewable_tasks(user, HostTask.objects.filter(host=host))
    tasks = tasks.select_related("job").order_by("-job__created")[:JOBS_SHOWN]
    return render(request, "web/host.html", {
        **chrome.context(request), "title": f"Host {host.ip}", "host": host,
        "summary": _summary(facts, readable.fullest_mounts([host.pk]).get(host.pk)),
        "assets": _asset_tables(assets), "timeline": _timeline(changes[:CHANGES_SHOWN]),
        "tasks": tasks, "groups": host.groups.order_by("name"),
        "run_form": ConsoleRunForm(initial={"hosts": host.ip}),
        "may_run": user.has_perm("jobs.run_command"),
    })  # fmt: skip
