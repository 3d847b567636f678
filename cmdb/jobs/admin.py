"""Admin for jobs: read-only records of what was run where, on the hosts the user may view."""

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.forms.models import BaseInlineFormSet
from django.urls import reverse
from django.utils.html import format_html
from django_celery_results.admin import TaskResultAdmin
from django_celery_results.models import TaskResult

from client.grouping import summary_line
from cmdb.access import visible
from cmdb.access.admin import ViewableMixin
from cmdb.jobs import documents
from cmdb.jobs.models import HostTask, Job


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


#: What the hosts said: shown only to who may read it (jobs.view_output), as in the API.
OUTPUT_FIELDS = frozenset({"stdout_head", "stdout_tail", "stderr_head", "stderr_tail", "error",
                           "fetched"})  # fmt: skip
OUTPUT_PERMISSION = visible.OUTPUT_PERMISSION


class RecordMixin(ReadOnlyMixin):
    """The record of who ran what, where: nobody deletes it through the admin; the hosts'
    output in it takes jobs.view_output, and is no filter for anyone."""

    def has_delete_permission(self, request, obj=None):
        return False

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if request.user.has_perm(OUTPUT_PERMISSION):
            return fields
        return [f for f in fields if f not in OUTPUT_FIELDS]

    def get_readonly_fields(self, request, obj=None):
        return [f for f in super().get_readonly_fields(request, obj)
                if f not in OUTPUT_FIELDS or request.user.has_perm(OUTPUT_PERMISSION)]  # fmt: skip

    def lookup_allowed(self, lookup, value, request=None):
        # ?stdout_head__startswith=... would answer yes or no about any host's output.
        if lookup.split("__")[0] in OUTPUT_FIELDS:
            return False
        return super().lookup_allowed(lookup, value, request)


#: Host tasks a job's page shows inline, the first by IP: the rest are in the host task list,
#: a page at a time (10,000 inline rows took the page 18 s to render; 100, 150 ms).
INLINE_TASKS = 50


class FirstTasksFormSet(BaseInlineFormSet):
    """The first INLINE_TASKS host tasks of the job (of those its user may view). Read-only
    (RecordMixin), so never saved: a slice is all it has to hold."""

    def get_queryset(self):
        if not hasattr(self, "_first_tasks"):
            # By IP alone: they are all of one job, and the model's ("job", "ip_key") would
            # join the job to sort by its creation time (the index on job and IP is used).
            tasks = super().get_queryset().order_by("ip_key")
            self._first_tasks = tasks[:INLINE_TASKS]
        return self._first_tasks


class HostTaskInline(ViewableMixin, RecordMixin, admin.TabularInline):
    model = HostTask
    formset = FirstTasksFormSet
    extra = 0
    fields = (
        "ip",
        "state",
        "late_state",
        "exit_code",
        "duration",
        "stdout_head",
        "stderr_head",
        "stdout_bytes",
        "stdout_truncated",
        "error",
        "task_id",
    )
    readonly_fields = fields


class OutcomeChangeList(ChangeList):
    """The job list, with the outcome column's counts: per state, the host tasks of the page's
    jobs the viewer may see, in one grouped query. Not annotations on the list's own query:
    joined to 10,000 host tasks, that made SQLite compute the hidden_hosts subquery once per
    joined row (a job page of 10,000 hosts took 150 s for a restricted user)."""

    def get_results(self, request):
        super().get_results(request)
        jobs = list(self.result_list)
        counts = visible.task_counts(request.user, jobs)
        for job in jobs:
            job.outcome_counts = counts[job.pk]
        self.result_list = jobs


@admin.register(Job)
class JobAdmin(ViewableMixin, RecordMixin, admin.ModelAdmin):
    list_display = ("id", "kind", "command", "requested_by", "created", "outcome", "results",
                    "dispatch_error")  # fmt: skip
    list_filter = ("kind", "created")
    #: Annotated with hidden_hosts: the inline shows only the host tasks the user may view.
    viewable = staticmethod(visible.viewable_jobs)
    readonly_fields = ("hidden_hosts", "host_tasks_listed")
    show_full_result_count = False

    @admin.display(description="hosts not shown")
    def hidden_hosts(self, job):
        return job.hidden_hosts or "none"

    @admin.display(description="host tasks")
    def host_tasks_listed(self, job):
        # Those its user may view: all of the job's but the hidden ones.
        shown = job.host_tasks.count() - (job.hidden_hosts or 0)
        listed = reverse("admin:jobs_hosttask_changelist") + f"?job={job.pk}"
        if shown <= INLINE_TASKS:
            return format_html('{} (<a href="{}">as a list</a>)', shown, listed)
        return format_html('{}: the first {} by IP below, <a href="{}">all of them as a list</a>',
                           f"{shown:,}", INLINE_TASKS, listed)  # fmt: skip

    def get_changelist(self, request, **kwargs):
        return OutcomeChangeList

    @admin.display(description="outcome")
    def outcome(self, job):
        counts = getattr(job, "outcome_counts", {})
        verdict = documents.progress_of(counts)
        color = ("#777" if not verdict.done else "#1a7f37" if verdict.ok
                 else "#cf222e")  # fmt: skip
        return format_html('<span style="color: {}">{}</span>', color, summary_line(counts))

    @admin.display(description="results")
    def results(self, job):
        return format_html('<a href="{}">live page</a>', job.get_absolute_url())

    search_fields = ("id", "command", "requested_by")
    date_hierarchy = "created"
    inlines = [HostTaskInline]


@admin.register(HostTask)
class HostTaskAdmin(ViewableMixin, RecordMixin, admin.ModelAdmin):
    list_display = ("task_id", "address", "state", "exit_code", "duration", "started_at", "job")

    @admin.display(description="IP address", ordering="ip_key")
    def address(self, task):
        return task.ip

    list_filter = ("state",)
    search_fields = ("task_id", "ip", "job__id")
    list_select_related = ("job",)
    #: A filtered list says "N of M" without counting M (a second count of 10,000 rows).
    show_full_result_count = False


class OutputTaskResultAdmin(ViewableMixin, TaskResultAdmin):
    """django-celery-results' admin, whose result and traceback are a host's report (its
    output included): shown only with jobs.view_output, of the hosts the user may view."""

    viewable = staticmethod(visible.viewable_results)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if request.user.has_perm(OUTPUT_PERMISSION):
            return fields
        return [f for f in fields if f not in ("result", "traceback", "meta")]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.has_perm(OUTPUT_PERMISSION):
            return fieldsets
        return [(name, {**opts, "fields": [f for f in opts["fields"]
                                           if f not in ("result", "traceback", "meta")]})
                for name, opts in fieldsets]  # fmt: skip

    def lookup_allowed(self, lookup, value, request=None):
        if lookup.split("__")[0] in ("result", "traceback", "meta"):
            return False
        return super().lookup_allowed(lookup, value, request)


admin.site.unregister(TaskResult)
admin.site.register(TaskResult, OutputTaskResultAdmin)
