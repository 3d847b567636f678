"""The live job page and the fleet dashboard (staff only, server-rendered, no JavaScript), of
the hosts the user may view (cmdb.access.visible)."""

from collections import Counter

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, render

from cmdb.access import visible
from cmdb.assets.models import HostFacts
from cmdb.hosts.choices import AgentStatusChoices
from cmdb.jobs import documents, report, rollout
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask

#: Seconds between reloads of a job page while any host has not finished.
REFRESH_EVERY = 2
#: Hosts per page of a job page (by IP): a job of 10,000 is 50 pages, not one of 10,000 blocks.
HOSTS_PER_PAGE = 200


@staff_member_required
@permission_required("jobs.view_job", raise_exception=True)
def job_detail(request, job_id):
    # Another's job on hosts one may not view is 404, as in the API; of one's own, the hosts
    # one may view (the others are counted: hidden_hosts).
    job = get_object_or_404(visible.viewable_jobs(request.user), pk=job_id)
    shown = visible.viewable_tasks(request.user, HostTask.objects.filter(job=job).order_by("ip"))
    counts = visible.task_counts(request.user, [job])[job.pk]
    done = documents.progress_of(counts).done
    page = Paginator(shown, HOSTS_PER_PAGE).get_page(request.GET.get("page"))
    tasks = list(page.object_list)
    # The hosts' output, only for those who may read it (jobs.view_output).
    output = visible.reads_output(request.user)
    rows = [
        {"task": t, "stdout": report.stream_text(t, "stdout") if output else "",
         "stderr": report.stream_text(t, "stderr") if output else ""}
        for t in tasks
    ]  # fmt: skip
    return render(request, "web/job.html", {
        **admin.site.each_context(request),
        "title": f"Job {job.id}", "job": job, "rows": rows, "done": done, "page": page,
        "hosts": sum(counts.values()), "summary": report.summary_of(counts),
        "refresh": None if done else REFRESH_EVERY,
        "output": output, "hidden": job.hidden_hosts, "rolling": rollout.describe(job.params),
    })  # fmt: skip


ROW = 26  # pixels per bar


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
    fullest = facts.filter(disk_free_pct__isnull=False).select_related("host")
    fullest = fullest.order_by("disk_free_pct")[:10]
    # Each job's share of ok hosts, among those the user may view: counted for these ten only
    # (in one query with the jobs', the database would count every job's tasks).
    jobs = list(visible.viewable_jobs(user).order_by("-created")[:10])
    tasks = visible.viewable_tasks(user, HostTask.objects.filter(job__in=jobs))
    rows = tasks.order_by().values("job")
    rows = rows.annotate(n=Count("pk"), ok=Count("pk", filter=Q(state=State.OK)))
    counts = {row["job"]: row for row in rows}
    for job in jobs:
        row = counts.get(job.pk, {"n": 0, "ok": 0})
        job.total, job.ok = row["n"], row["ok"]
    fullest_rows = [
        {
            "host": f.host,
            "free": f.disk_free_pct,
            "y": ROW * i,
            "px": round(3 * (100 - f.disk_free_pct)),
        }
        for i, f in enumerate(fullest)
    ]
    job_rows = [{"job": j, "px": round(200 * j.ok / j.total) if j.total else 0} for j in jobs]
    context = {
        **admin.site.each_context(request),
        "title": "Fleet dashboard",
        "hosts": hosts,
        "status": bars({s.label: status.get(s.value, 0) for s in AgentStatusChoices}, hosts),
        "os_mix": bars(dict(os_mix.most_common(10)), hosts, width=260),
        "fullest": {"rows": fullest_rows, "height": ROW * max(len(fullest_rows), 1)},
        "jobs": job_rows,
    }
    return render(request, "web/dashboard.html", context)
