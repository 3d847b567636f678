"""The fleet page (hosts with their status and main facts, filtered by group and by `where`
expressions, in numeric address order) and the run page (a command on targets, with a live
count of the hosts they match). Only the hosts the user may view (cmdb.access.visible)."""

from urllib.parse import urlencode

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from cmdb.access import visible
from cmdb.access.actor import actor_of
from cmdb.assets import where as where_lang
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs import services
from cmdb.jobs.exceptions import BrokerDown, CannotSign, NeedsConfirmation, Refused
from cmdb.web import chrome, readable
from cmdb.web.forms import ConsoleRunForm

#: Hosts per page of the fleet page: at 1366 px a page of 100 rows is a few screens, and the
#: server reads the facts of those only.
FLEET_PAGE = 100


def _lines(text: str) -> list[str]:
    """Expressions one a line or separated by ";" (a comma may be inside a value)."""
    return [e.strip() for line in (text or "").splitlines() for e in line.split(";") if e.strip()]


def matched(user, hosts: list[str], groups: list[str], where: list[str]):
    """The hosts ``user`` may view that the targets match (as dispatch resolves them: the
    union of hosts and groups' members, ANDed with every expression), and the problems."""
    q, problems = where_lang.parse_all(where)
    chosen = Q()
    if hosts:
        chosen |= Q(ip__in=hosts) | Q(hostname__in=hosts)
    if groups:
        chosen |= Q(groups__name__in=groups)
    if problems or not (hosts or groups or where):
        return Host.objects.none(), problems
    found = visible.viewable_hosts(user).filter(chosen).filter(q).distinct()
    return found, problems


@staff_member_required
@permission_required("hosts.view_host", raise_exception=True)
def fleet(request):
    user = request.user
    group, where = request.GET.get("group", ""), request.GET.get("where", "")
    hosts = visible.viewable_hosts(user)
    if group:
        hosts = hosts.filter(groups__name=group)
    q, problems = where_lang.parse_all(_lines(where))
    if not problems:
        hosts = hosts.filter(q).distinct()
    # Numeric order (ip_key) by the database, which counts the matches and reads one page of
    # pks; then the page's rows with their facts.
    order = hosts.order_by("ip_key").values_list("pk", flat=True)
    page = Paginator(order, FLEET_PAGE).get_page(request.GET.get("page"))
    pks = list(page.object_list)
    rows = {h.pk: h for h in Host.objects.filter(pk__in=pks).select_related("facts")}
    fullest = readable.fullest_mounts(pks)
    table = []
    for pk in pks:
        host = rows[pk]
        facts = getattr(host, "facts", None)
        mount = fullest.get(pk)
        table.append({
            "host": host, "facts": facts, "memory": readable.gib(facts and facts.memory_bytes),
            "mount": mount and mount[0], "used": mount and mount[1],
        })  # fmt: skip
    # The group filter's names: every group (a name shows no host), no members loaded.
    groups = HostGroup.objects.order_by("name").only("name")
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "web/fleet.html", {
        **chrome.context(request), "title": "Fleet", "rows": table, "page": page,
        "count": page.paginator.count, "groups": groups, "group": group, "where": where,
        "problems": problems, "query": query.urlencode(), "fields": sorted(where_lang.FIELDS),
        "run_query": urlencode({"groups": group, "where": where}),
        "may_run": user.has_perm("jobs.run_command"),
    })  # fmt: skip


@staff_member_required
@permission_required("hosts.view_host", raise_exception=True)
@require_GET
def run_count(request):
    """The run page's live count: how many hosts the targets match, or why they match none."""
    form = ConsoleRunForm(request.GET)
    form.is_valid()
    data = form.cleaned_data
    found, problems = matched(request.user, data.get("hosts", []), data.get("groups", []),
                              data.get("where", []))  # fmt: skip
    # The first 20 by the database's numeric order, and the count: not every match sorted.
    ips = list(found.order_by("ip_key").values_list("ip", flat=True)[:20])
    return render(request, "web/run_count.html", {"ips": ips, "count": found.count(),
                                                  "problems": problems})  # fmt: skip


@staff_member_required
@permission_required("jobs.run_command", raise_exception=True)
def run(request):
    """A command on hosts, groups and `where` expressions, through the service layer (which
    checks the grants); the job page after, or the form again with what was wrong."""
    initial = {name: request.GET.get(name, "") for name in ("hosts", "groups", "where")}
    initial["where"] = "\n".join(_lines(initial["where"]))
    form = ConsoleRunForm(request.POST or None, initial=initial)
    notes = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        targets = services.Targets(hosts=data["hosts"], groups=data["groups"],
                                   where=data["where"], timeout=data["timeout"],
                                   confirm=form.confirmed())  # fmt: skip
        try:
            job = services.run(data["command"], targets, actor_of(request, "web"))
        except NeedsConfirmation as exc:
            form.ask_to_confirm(exc.count)
            notes.append(f"{exc.count} hosts are more than the {exc.ceiling} you may reach "
                         'without confirming: tick "confirm" and run again.')  # fmt: skip
        except (Refused, CannotSign) as exc:
            notes.append("nothing dispatched: " + "; ".join(getattr(exc, "problems", [str(exc)])))
        except BrokerDown as exc:
            if exc.job is None:
                notes.append(str(exc))
            else:
                return redirect("web:job", job_id=exc.job.pk)
        else:
            return redirect("web:job", job_id=job.pk)
    return render(request, "web/run.html", {
        **chrome.context(request), "title": "Run a command", "form": form,
        "notes": notes,
    })  # fmt: skip
