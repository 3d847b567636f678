"""Admin for hosts and groups."""

from django.contrib import admin, messages

from cmdb.assets.admin import AssetInline, ChangeInline
from cmdb.hosts import keys
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.exceptions import Refused
from cmdb.web import actions


def _key_action(verb: str, description: str):
    @admin.action(description=description, permissions=["manage_keys"])
    def act(modeladmin, request, queryset):
        try:
            done = getattr(keys, verb)(list(queryset.values_list("ip", flat=True)))
        except Refused as exc:
            modeladmin.message_user(request, "nothing changed: " + "; ".join(exc.problems),
                                    messages.ERROR)  # fmt: skip
            return
        past = keys.VERBS[verb][0]
        modeladmin.message_user(request, f"keys {past}: {', '.join(done)}" if done
                                else f"no key to {verb}", messages.SUCCESS if done
                                else messages.WARNING)  # fmt: skip

    act.__name__ = f"{verb}_keys"
    return act


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ("ip", "hostname", "key_state", "agent_status", "os", "last_seen",
                    "agent_name")  # fmt: skip
    list_filter = ("key_state", "agent_status", "groups", "facts__os")
    search_fields = ("ip", "hostname", "agent_name")
    list_select_related = ("facts",)
    # Written by agents' registrations, heartbeats and collections, not by people.
    readonly_fields = ("agent_status", "agent_name", "agent_pid", "last_seen", "created",
                       "agent_key", "key_state", "key_fingerprint", "key_changed_at")  # fmt: skip
    inlines = [AssetInline, ChangeInline]
    actions = [actions.run_command, actions.collect_facts, actions.push_file, actions.fetch_file,
               _key_action("accept", "Accept the agents' keys of selected hosts"),
               _key_action("reject", "Reject the agents' keys of selected hosts"),
               _key_action("delete", "Delete the agents' keys of selected hosts")]  # fmt: skip

    def get_readonly_fields(self, request, obj=None):
        # The IP is the host's queue: moving it redirects every command sent to the host.
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and not request.user.has_perm("hosts.change_host_ip"):
            fields = (*fields, "ip")
        return fields

    def has_manage_keys_permission(self, request):
        return request.user.has_perm("hosts.manage_keys")

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

    def get_readonly_fields(self, request, obj=None):
        # Grants are by group: its members are who may be acted on under them.
        fields = super().get_readonly_fields(request, obj)
        if not request.user.has_perm("hosts.change_hostgroup_members"):
            fields = (*fields, "hosts")
        return fields
