"""The fleet dashboard (staff only, server-rendered), of the hosts the user may view
(cmdb.access.visible). The job page is cmdb.web.jobpage."""

from collections import Counter

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Q
from django.shortcuts import render

from client.grouping import ip_order
from cmdb.access import visible
from cmdb.assets.models import HostFacts
from cmdb.hosts.choices import AgentStatusChoices
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from cmdb.web import chrome, readable

ROW = 26  # pixels per bar


#: Hosts whose fullest disk is charted, and how many are read to find them.
FULLEST_SHOWN = 10
FULLEST_CANDIDATES = 50
FAILED = [s for s in State.values if s not in (State.OK, *State.active())]


def _fullest_disks(facts) -> list[tuple]:
    """(host, mount, used %) of the fullest filesystems, by the used % `facts` prints (the
    mount's used_pct, as df counts it: of used + free to unprivileged users). The hosts are
    those lowest in disk_free_pct (of the size, reserve included), so that only their mounts
    are read; the two orders agree but for hosts a reserve apart."""
    lowest = facts.filter(disk_free_pct__isnull=False).select_related("host")
    lowest = list(lowest.order_by("disk_free_pct")[:FULLEST_CANDIDATES])
    used = readable.fullest_mounts([f.host_id for f in lowest])
    # A host whose mounts are not recorded (facts of an older collector): what facts has.
    found = [(f.host, *used.get(f.host_id, ("", round(100 - f.disk_free_pct, 1))))
             for f in lowest]  # fmt: skip
    found.sort(key=lambda row: (-row[2], ip_order(row[0].ip)))
    return found[:FULLEST_SHOWN]


def bars(counts: dict[str, float], total: float | None = None, width: int = 300) -> dict:
    """A horizontal bar chart: rows (label, value, bar width, y) and the SVG height."""
    top = total or max(counts.values(), default=0) or 1
    rows = [{"label": label, "value": value, "px": round(width * value / top), "y": ROW * i}
            for i, (label, value) in enumerate(counts.items())]  # fmt: skip
    return {"rows": rows, "height": ROW * max(len(rows), 1)}


@staff_member_required
def dashboard(request):
    """Counts of the hosts the user may view only: of the fleet, what their grants cover."""
    user = request.user
    seen = visible.viewable_hosts(user)
    status = Counter(dict(seen.values_list("agent_status").annotate(n=Count("id"))))
    hosts = sum(status.values())
    facts = visible.on_viewable_hosts(user, HostFacts.objects.all())
    os_mix = Counter()
    for os_id, version, n in facts.values_list("os", "os_version").annotate(n=Count("id")):
        os_mix[f"{os_id} {version}".strip() or "unknown"] += n
    fullest = _fullest_disks(facts)
    # Each job's share of ok hosts, among those the user may view: counted for these ten only
    # (in one query with the jobs', the database would count every job's tasks).
    jobs = list(visible.viewable_jobs(user).order_by("-created")[:10])
    tasks = visible.viewable_tasks(user, HostTask.objects.filter(job__in=jobs))
    rows = tasks.order_by().values("job")
    rows = rows.annotate(
        n=Count("pk"),
        ok=Count("pk", filter=Q(state=State.OK)),
        bad=Count("pk", filter=Q(state__in=FAILED)),
    )
    counts = {row["job"]: row for row in rows}
    for job in jobs:
        row = counts.get(job.pk, {"n": 0, "ok": 0, "bad": 0})
        job.total, job.ok, job.failed = row["n"], row["ok"], row["bad"]
    # The bar is the used % its label says, of 300 px for 100 %.
    fullest_rows = [
        {"host": host, "mount": mount, "used": used, "y": ROW * i, "px": round(3 * used)}
        for i, (host, mount, used) in enumerate(fullest)
    ]
    job_rows = [
        {
            "job": j,
            "px": round(200 * j.ok / j.total) if j.total else 0,
            "bad_px": round(200 * j.failed / j.total) if j.total else 0,
        }
        for j in jobs
    ]
    context = {
        **chrome.context(request),
        "title": "Fleet dashboard",
        "hosts": hosts,
        "status": bars({s.label: status.get(s.value, 0) for s in AgentStatusChoices}, hosts),
        "os_mix": bars(dict(os_mix.most_common(10)), hosts, width=260),
        "fullest": {"rows": fullest_rows, "height": ROW * max(len(fullest_rows), 1)},
        "jobs": job_rows,
    }
    return render(request, "web/dashboard.html", context)
