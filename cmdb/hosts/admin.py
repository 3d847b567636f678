"""Admin for hosts and groups."""

from django.contrib import admin

from cmdb.assets.admin import AssetInline, ChangeInline
from cmdb.hosts.models import Host, HostGroup
from cmdb.web import actions


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ("ip", "hostname", "agent_status", "os", "last_seen", "agent_name")
    list_filter = ("agent_status", "groups", "facts__os")
    search_fields = ("ip", "hostname", "agent_name")
    list_select_related = ("facts",)
    # Written by agents' registrations, heartbeats and collections, not by people.
    readonly_fields = ("agent_status", "agent_name", "agent_pid", "last_seen", "created")
    inlines = [AssetInline, ChangeInline]
    actions = [actions.run_command, actions.collect_facts, actions.push_file, actions.fetch_file]

    def has_run_command_permission(self, request):
        return request.user.has_perm("jobs.run_command")

    def has_collect_facts_permission(self, request):
        return request.user.has_perm("jobs.collect_facts")

    @admin.display(description="OS", ordering="facts__os")
    def os(self, host):
        facts = getattr(host, "facts", None)
        return f"{facts.os} {facts.os_version}".strip() if facts else "-"


@admin.register(HostGroup)
class HostGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "description")
    search_fields = ("name",)
    filter_horizontal = ("hosts",)
