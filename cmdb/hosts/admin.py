"""Admin for hosts."""

from django.contrib import admin

from cmdb.hosts.models import Host


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ("ip", "hostname", "agent_status", "last_seen", "agent_name")
    list_filter = ("agent_status",)
    search_fields = ("ip", "hostname", "agent_name")
    # Written by agents' registrations and heartbeats, not by people.
    readonly_fields = ("agent_status", "agent_name", "agent_pid", "last_seen", "created")
