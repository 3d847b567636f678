"""The job page: a table of states (each a filter), the hosts' output grouped by outcome (or
host by host), elapsed time, Cancel and "Re-run on failed hosts" (through the service layer,
which checks the grants), export as CSV or JSON lines, and a refresh every 2 s (htmx) while
any host has not finished; meanwhile each host's output streams in as it is produced (the job's
Server-Sent Events, static/web/joblive.js), and a host that ends refreshes the page at once.
Of the hosts the user may view (cmdb.access.visible)."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db.models import Max
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from client.export import FORMATS, export
from client.grouping import STATES, group, ip_order
from cmdb.access import visible
from cmdb.access.actor import actor_of
from cmdb.jobs import documents, report, rollout, services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.exceptions import NeedsConfirmation, ServiceError
from cmdb.jobs.models import HostTask
from cmdb.web import chrome

#: Seconds between refreshes of a job page while any host has not finished.
REFRESH_EVERY = 2
#: Hosts per page of the host-by-host view (by IP): a job of 10,000 is 50 pages.
HOSTS_PER_PAGE = 200
#: Above this many hosts, the page shows their output grouped by outcome unless asked not to.
GROUP_ABOVE = 10
#: Groups shown at once (the odd ones first); the rest are a link to the host-by-host view.
GROUPS_SHOWN = 50
FAILED = set(services.RERUN_STATES)


def _job(request, job_id):
    # Another's job on hosts one may not view is 404, as in the API.
    return get_object_or_404(visible.viewable_jobs(request.user), pk=job_id)


def _elapsed(job, tasks, done: bool) -> float | None:
    start = job.dispatched_at or job.created
    end = tasks.aggregate(end=Max("finished_at"))["end"] if done else timezone.now()
    return None if start is None or end is None else max((end - start).total_seconds(), 0.0)


def _state_table(counts: dict, chosen: str) -> list[dict]:
    order = [s for s in STATES if counts.get(s)] + sorted(set(counts) - set(STATES))
    return [{"state": s, "n": counts[s], "chosen": s == chosen, "bad": s in FAILED}
            for s in order if counts.get(s)]  # fmt: skip


def _groups(tasks: list[HostTask], output: bool) -> list[dict]:
    found = group(report.row(t, output) for t in tasks)
    return [{"group": g, "label": g.label, "bad": g.state in FAILED} for g in found]


@staff_member_required
@permission_required("jobs.view_job", raise_exception=True)
def job_detail(request, job_id):
    job = _job(request, job_id)
    user = request.user
    everything = visible.viewable_tasks(user, HostTask.objects.filter(job=job))
    counts = visible.task_counts(user, [job])[job.pk]
    done = documents.progress_of(counts).done
    state = request.GET.get("state", "")
    chosen = everything.filter(state=state) if state else everything
    hosts = sum(counts.values())
    view = request.GET.get("view") or ("groups" if hosts > GROUP_ABOVE else "hosts")
    # The hosts' output, only for those who may read it (jobs.view_output).
    output = visible.reads_output(user)
    page, rows, groups, more_groups = None, [], [], 0
    if view == "groups":
        groups = _groups(list(chosen), output)
        more_groups = max(len(groups) - GROUPS_SHOWN, 0)
        groups = groups[:GROUPS_SHOWN]
    else:
        # Numeric order whatever the database: the page's ids in address order, then the rows.
        order = sorted(chosen.values_list("ip", "pk"), key=lambda r: ip_order(r[0]))
        page = Paginator(order, HOSTS_PER_PAGE).get_page(request.GET.get("page"))
        by_pk = HostTask.objects.in_bulk([pk for _, pk in page.object_list])
        for _, pk in page.object_list:
            t = by_pk[pk]
            rows.append(
                {
                    "task": t,
                    "stdout": report.stream_text(t, "stdout") if output else "",
                    "stderr": report.stream_text(t, "stderr") if output else "",
                }
            )
    failed = sum(n for s, n in counts.items() if s in FAILED)
    perm = services.RERUN_PERMISSION.get(job.kind)
    base = request.GET.copy()
    base.pop("page", None)
    paging = base.urlencode()
    base.pop("view", None)
    return render(request, "web/job.html", {
        **chrome.context(request),
        "title": f"Job {job.id}", "job": job, "rows": rows, "done": done, "page": page,
        "hosts": hosts, "summary": report.summary_of(counts),
        "states": _state_table(counts, state), "state": state, "view": view,
        "groups": groups, "more_groups": more_groups, "base": base.urlencode(), "paging": paging,
        "elapsed": _elapsed(job, everything, done),
        "refresh": None if done else REFRESH_EVERY, "formats": FORMATS,
        "may_cancel": not done and user.has_perm("jobs.cancel_job"),
        "may_rerun": bool(done and failed and perm and user.has_perm(perm)),
        "failed": failed, "output": output, "hidden": job.hidden_hosts,
        "rolling": rollout.describe(job.params),
    })  # fmt: skip


@staff_member_required
@permission_required("jobs.view_job", raise_exception=True)
def job_export(request, job_id, fmt):
    """Every host task the user may view (a state's only with ?state=), one a line."""
    if fmt not in FORMATS:
        raise Http404(f"no export as {fmt!r}: {', '.join(FORMATS)}")
    job = _job(request, job_id)
    tasks = visible.viewable_tasks(request.user, HostTask.objects.filter(job=job))
    if request.GET.get("state"):
        tasks = tasks.filter(state=request.GET["state"])
    output = visible.reads_output(request.user)
    body = export([report.row(t, output) for t in tasks], fmt)
    kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
    response = HttpResponse(body, content_type=f"{kind}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="job-{job.pk}.{fmt}"'
    return response


@staff_member_required
@require_POST
def job_cancel(request, job_id):
    job = _job(request, job_id)
    try:
        n = services.cancel(str(job.pk), actor=actor_of(request, "web"))
    except ServiceError as exc:
        messages.error(request, f"not cancelled: {exc}")
    else:
        messages.success(request, f"asked {n} host task{'' if n == 1 else 's'} to stop")
    return redirect("web:job", job_id=job.pk)


@staff_member_required
@require_POST
def job_rerun(request, job_id):
    job = _job(request, job_id)
    state = request.POST.get("state")
    states = (state,) if state in State.values else services.RERUN_STATES
    try:
        new = services.rerun(str(job.pk), states, actor_of(request, "web"),
                             confirm=bool(request.POST.get("confirm")))  # fmt: skip
    except NeedsConfirmation as exc:
        messages.error(
            request,
            f"not re-run: {exc.count} hosts are more than the {exc.ceiling} "
            'you may reach without confirming: tick "confirm" and re-run.',
        )
        return redirect(f"{job.get_absolute_url()}?confirm=1")
    except ServiceError as exc:
        messages.error(request, f"not re-run: {exc}")
        return redirect("web:job", job_id=job.pk)
    return redirect("web:job", job_id=new.pk)
