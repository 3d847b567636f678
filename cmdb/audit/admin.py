"""Admin for the audit trail: read-only for everyone, superusers included."""

from django.contrib import admin

from cmdb.audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("seq", "at", "username", "via", "address", "action", "outcome", "kind",
                    "short_command", "targets", "job_id")  # fmt: skip
    list_filter = ("action", "via", "outcome", "username")
    date_hierarchy = "at"
    search_fields = ("command", "username", "hosts")
    search_help_text = "Command text, user, or a host's IP."
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    list_per_page = 100
    # A COUNT(*) of a trail of millions on every page costs more than it tells.
    show_full_result_count = False

    # The database refuses changes anyway (triggers); the admin does not offer them.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="command")
    def short_command(self, entry):
        return entry.command if len(entry.command) <= 80 else entry.command[:79] + "…"

    @admin.display(description="targets")
    def targets(self, entry):
        shown = entry.targets_resolved[:5]
        more = len(entry.targets_resolved) - len(shown)
        return " ".join(shown) + (f" (+{more})" if more > 0 else "")
