"""What a user may view: hosts, the records of a host (facts, assets, changes, host tasks and
their results) and the jobs that reached it, narrowed by their view grants (cmdb.access.grants).

Each is one filter, a subquery of the pks of the hosts the grants cover, so that a list stays
one query at 10,000 hosts; a superuser's queryset is left as it is. Model permissions
(hosts.view_host, jobs.view_output ...) still say what kind of record a user may read; these
say which ones. What a user may not view is as if it did not exist: lists leave it out and a
detail answers 404, never 403 (which would confirm it exists). A host task whose host was
removed is on no host anyone is granted: only a superuser sees it.
"""

from django.db.models import Count, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django_celery_results.models import TaskResult

from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.hosts.models import Host
from cmdb.jobs.models import HostTask, Job

#: What reading the hosts' output (stdout, stderr, fetched files) takes, on top of view.
OUTPUT_PERMISSION = "jobs.view_output"


def _host_pks(user) -> QuerySet | None:
    q = grants.host_filter(user, Action.VIEW)
    return None if q is None else Host.objects.filter(q).values("pk")


def host_q(user, field: str = "host") -> Q:
    """Rows whose ``field`` (a foreign key to Host; "pk" for hosts themselves) is a host
    ``user`` may view, as a filter to combine (a Count's); Q(), no filter, for a superuser."""
    pks = _host_pks(user)
    return Q() if pks is None else Q(**{f"{field}__in": pks})


def on_viewable_hosts(user, rows: QuerySet, field: str = "host") -> QuerySet:
    """``rows`` (assets, changes, facts, host tasks: anything with a foreign key ``field`` to
    Host) narrowed to those of hosts ``user`` may view."""
    return rows.filter(host_q(user, field))


def viewable_hosts(user, hosts: QuerySet | None = None) -> QuerySet:
    """``hosts`` (all by default) narrowed to those ``user`` may view."""
    return on_viewable_hosts(user, Host.objects.all() if hosts is None else hosts, "pk")


def viewable_tasks(user, tasks: QuerySet | None = None) -> QuerySet:
    """``tasks`` (all host tasks by default) narrowed to those on hosts ``user`` may view."""
    return on_viewable_hosts(user, HostTask.objects.all() if tasks is None else tasks)


def viewable_jobs(user, jobs: QuerySet | None = None, tasks: QuerySet | None = None,
                  tasks_limit: int | None = None) -> QuerySet:  # fmt: skip
    """``jobs`` (all by default) narrowed to those ``user`` may view: a job with a host task on
    a host they may view, or one they asked for (requested_by is the username; a job whose
    every target was refused has no host task at all).

    Each job is annotated with ``hidden_hosts``: how many of its host tasks are on hosts the
    user may not view, so that what is shown of it says it is not the whole. With ``tasks`` (a
    HostTask queryset), ``host_tasks`` is prefetched from it, narrowed the same way; with
    ``tasks_limit``, only the first that many of each job's (in ``tasks``' order, narrowed
    first), as the list ``first_tasks``.
    """
    jobs = Job.objects.all() if jobs is None else jobs
    pks = _host_pks(user)
    if pks is None:
        jobs = jobs.annotate(hidden_hosts=Value(0, output_field=IntegerField()))
    else:
        name = user.get_username() if user is not None and user.is_active else ""
        mine = Q(requested_by=name) if name else Q(pk__in=[])
        jobs = jobs.filter(Q(pk__in=HostTask.objects.filter(host__in=pks).values("job_id")) | mine)
        # Tasks of a removed host (host null) are hidden too: exclude() keeps the nulls.
        hidden = (HostTask.objects.filter(job=OuterRef("pk")).exclude(host__in=pks).order_by()
                  .values("job").annotate(n=Count("pk")).values("n"))  # fmt: skip
        jobs = jobs.annotate(hidden_hosts=Coalesce(Subquery(hidden), 0))
        tasks = None if tasks is None else tasks.filter(host__in=pks)
    if tasks is not None:
        if tasks_limit is None:
            jobs = jobs.prefetch_related(Prefetch("host_tasks", queryset=tasks))
        else:  # to an attribute: a sliced prefetch cannot be the related manager's cache
            first = Prefetch("host_tasks", queryset=tasks[:tasks_limit], to_attr="first_tasks")
            jobs = jobs.prefetch_related(first)
    return jobs


def task_counts(user, jobs) -> dict:
    """{job pk: {state: host tasks}} of ``jobs``' host tasks on hosts ``user`` may view: the
    whole of each job, counted by the database, when only a page of its tasks is loaded."""
    rows = viewable_tasks(user, HostTask.objects.filter(job__in=jobs)).order_by()
    rows = rows.values("job", "state").annotate(n=Count("pk")).values_list("job", "state", "n")
    counts: dict = {job.pk: {} for job in jobs}
    for job, state, n in rows:
        counts[job][state] = n
    return counts


def with_viewable_members(user, groups: QuerySet) -> QuerySet:
    """Host groups, every one (a group's name shows no host), with ``hosts`` prefetched narrowed
    to the members ``user`` may view."""
    return groups.prefetch_related(Prefetch("hosts", queryset=viewable_hosts(user)))


def viewable_results(user, results: QuerySet | None = None) -> QuerySet:
    """django-celery-results' rows (a host's report, its output included) narrowed to those of
    host tasks ``user`` may view, and those of no host task (the server's own tasks)."""
    results = TaskResult.objects.all() if results is None else results
    pks = _host_pks(user)
    if pks is None:
        return results
    seen = HostTask.objects.filter(host__in=pks).values("task_id")
    return results.filter(Q(task_id__in=seen) | ~Q(task_id__in=HostTask.objects.values("task_id")))


def reads_output(user) -> bool:
    """Whether ``user`` may read the output and fetched files of the host tasks they may view
    (None: the server's own operator, who may)."""
    return user is None or user.has_perm(OUTPUT_PERMISSION)
