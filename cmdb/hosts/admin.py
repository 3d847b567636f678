"""Admin for hosts and groups."""

from django.contrib import admin, messages

from cmdb.access import grants, visible
from cmdb.access.admin import ViewableMixin, ViewableValuesFilter
from cmdb.access.models import Action
from cmdb.assets.admin import AssetInline, ChangeInline
from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.context import current_actor
from cmdb.audit.trail import record
from cmdb.hosts import keys
from cmdb.hosts.inventory import FORGOTTEN_KEYS
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
class HostAdmin(ViewableMixin, admin.ModelAdmin):
    #: Also what the actions (run, collect, push, fetch, keys) are given: viewable hosts only.
    viewable = staticmethod(visible.viewable_hosts)
    list_display = ("address", "hostname", "key_state", "agent_status", "os", "last_seen",
                    "agent_name")  # fmt: skip
    list_filter = ("key_state", "agent_status", "groups", ("facts__os", ViewableValuesFilter))
    search_fields = ("ip", "hostname", "agent_name")
    list_select_related = ("facts",)
    #: A filtered list says "N of M" without counting M (a second count of 10,000 rows).
    show_full_result_count = False
    # Written by agents' registrations, heartbeats and collections, not by people.
    # How the host is reached, and its SSH host key: key management (`hosts mode`, `hosts
    # trust`), not a form's fields.
    readonly_fields = ("agent_status", "agent_name", "agent_pid", "last_seen", "created",
                       "agent_key", "key_state", "key_fingerprint", "key_changed_at", "mode",
                       "ssh_user", "ssh_port", "ssh_host_key", "salt_minion")  # fmt: skip
    inlines = [AssetInline, ChangeInline]
    actions = [actions.run_command, actions.collect_facts, actions.push_file, actions.fetch_file,
               _key_action("accept", "Accept the agents' keys of selected hosts"),
               _key_action("reject", "Reject the agents' keys of selected hosts"),
               _key_action("delete", "Delete the agents' keys of selected hosts")]  # fmt: skip

    def get_readonly_fields(self, request, obj=None):
        # The IP is the host's queue: moving it redirects every command sent to the host.
        # Its key goes with it, so it is as strong as managing the key: the keys action too.
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and (not request.user.has_perm("hosts.change_host_ip")
                                or grants.refusals(request.user, Action.KEYS, [obj])):  # fmt: skip
            fields = (*fields, "ip")
        return fields

    def save_model(self, request, obj, form, change):
        if change and "ip" in form.changed_data:
            # A key accepted for the old address is no proof of whoever is at the new one
            # (as the API's change does, cmdb.hosts.inventory).
            old = form.initial.get("ip")
            if obj.agent_key or obj.candidate_key or obj.ssh_host_key:
                record(current_actor(), AuditActionChoices.KEY_DELETE,
                       targets_resolved=[old, obj.ip],
                       detail={"host": obj.pk, "reason": "IP changed"})  # fmt: skip
            for field, value in FORGOTTEN_KEYS.items():
                setattr(obj, field, value)
        super().save_model(request, obj, form, change)

    def has_manage_keys_permission(self, request):
        return request.user.has_perm("hosts.manage_keys")

    def has_run_command_permission(self, request):
        return request.user.has_perm("jobs.run_command")

    def has_collect_facts_permission(self, request):
        return request.user.has_perm("jobs.collect_facts")

    @admin.display(description="IP address", ordering="ip_key")
    def address(self, host):
        return host.ip

    @admin.display(description="OS", ordering="facts__os")
    def os(self, host):
        facts = getattr(host, "facts", None)
        return f"{facts.os} {facts.os_version}".strip() if facts else "-"


@admin.register(HostGroup)
class HostGroupAdmin(admin.ModelAdmin):
    """Every group (a name shows no host), with only the members its user may view: offered to
    pick, or listed on a read-only page."""

    list_display = ("name", "description")
    search_fields = ("name",)
    filter_horizontal = ("hosts",)
    readonly_fields = ("members",)

    def get_fields(self, request, obj=None):
        # Grants are by group: its members are who may be acted on under them, so changing
        # them takes its own permission. Read-only, the hosts field would list every member:
        # the viewable ones instead.
        members = request.user.has_perm("hosts.change_hostgroup_members")
        if members and (obj is None or self.has_change_permission(request, obj)):
            return ["name", "description", "hosts"]
        return ["name", "description"] if obj is None else ["name", "description", "members"]

    def get_object(self, request, object_id, from_field=None):
        # On the group itself: members() is given no request (and the admin is shared).
        group = super().get_object(request, object_id, from_field)
        if group is not None:
            group.viewable_members = list(visible.viewable_hosts(request.user, group.hosts.all()))
        return group

    @admin.display(description="hosts")
    def members(self, group):
        return ", ".join(map(str, getattr(group, "viewable_members", [])))

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "hosts":
            kwargs["queryset"] = visible.viewable_hosts(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_related(self, request, form, formsets, change):
        # The members the user may not view were not offered: they stay members, unseen (and
        # unchanged: no removal and addition again in the audit trail).
        if change and "hosts" in form.cleaned_data:
            unseen = form.instance.hosts.exclude(pk__in=visible.viewable_hosts(request.user))
            form.cleaned_data["hosts"] = [*form.cleaned_data["hosts"], *unseen]
        super().save_related(request, form, formsets, change)
