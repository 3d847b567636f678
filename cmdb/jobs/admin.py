"""Admin for jobs: read-only records of what was run where."""

from django.contrib import admin
from django.utils.html import format_html

from cmdb.jobs.models import HostTask, Job


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RecordMixin(ReadOnlyMixin):
    """The record of who ran what, where: nobody deletes it through the admin."""

    def has_delete_permission(self, request, obj=None):
        return False


class HostTaskInline(RecordMixin, admin.TabularInline):
    model = HostTask
    extra = 0
    fields = (
        "ip",
        "state",
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


@admin.register(Job)
class JobAdmin(RecordMixin, admin.ModelAdmin):
    list_display = ("id", "kind", "command", "requested_by", "created", "results", "dispatch_error")
    list_filter = ("kind", "created")

    @admin.display(description="results")
    def results(self, job):
        return format_html('<a href="{}">live page</a>', job.get_absolute_url())

    search_fields = ("id", "command", "requested_by")
    date_hierarchy = "created"
    inlines = [HostTaskInline]


@admin.register(HostTask)
class HostTaskAdmin(RecordMixin, admin.ModelAdmin):
    list_display = ("task_id", "ip", "state", "exit_code", "duration", "started_at", "job")
    list_filter = ("state",)
    search_fields = ("task_id", "ip", "job__id")
    list_select_related = ("job",)
