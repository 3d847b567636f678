"""What the app records by itself: failed logins, group membership and host IP changes.

Connected from AppConfig.ready(). Changes made with QuerySet.update() send no signal: the
service layer records those itself (cmdb.audit.record).
"""

from django.contrib.auth.signals import user_login_failed
from django.db.backends.signals import connection_created
from django.db.models.signals import m2m_changed, post_save, pre_delete, pre_save

from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.context import actor_of, current_actor
from cmdb.audit.retention import register_sqlite_function
from cmdb.audit.trail import record
from cmdb.hosts.models import Host, HostGroup

#: m2m_changed actions recorded, and the word the entry's detail uses.
MEMBERSHIP = {"post_add": "added", "post_remove": "removed", "post_clear": "removed"}


def login_failed(sender, credentials, request=None, **kwargs):
    actor = actor_of(request) if request is not None else current_actor()
    # Django has already masked secrets in credentials; only the name tried is kept.
    record(actor, AuditActionChoices.LOGIN_FAILED, username=str(credentials.get("username", "")))


def membership_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    """Hosts added to or removed from a group, from either side (group.hosts, host.groups)."""
    if action == "pre_clear":
        # After the clear nobody knows who was in it: keep the members for post_clear.
        if reverse:
            instance._audit_cleared = list(instance.groups.values_list("pk", flat=True))
        else:
            instance._audit_cleared = list(instance.hosts.values_list("pk", flat=True))
        return
    if action not in MEMBERSHIP:
        return
    pks = pk_set if action != "post_clear" else getattr(instance, "_audit_cleared", [])
    if not pks:
        return
    if reverse:  # host.groups.add(group, ...): one entry per group
        groups, hosts = HostGroup.objects.filter(pk__in=pks).order_by("name"), [instance.ip]
    else:
        groups = [instance]
        hosts = list(Host.objects.filter(pk__in=pks).order_by("ip").values_list("ip", flat=True))
    for group in groups:
        record(current_actor(), AuditActionChoices.GROUP_CHANGE, targets_resolved=hosts,
               detail={"group": group.name, MEMBERSHIP[action]: hosts})  # fmt: skip


def group_deleted(sender, instance, **kwargs):
    hosts = list(instance.hosts.order_by("ip").values_list("ip", flat=True))
    record(current_actor(), AuditActionChoices.GROUP_CHANGE, targets_resolved=hosts,
           detail={"group": instance.name, "deleted": True, "removed": hosts})  # fmt: skip


def remember_host_ip(sender, instance, raw=False, update_fields=None, **kwargs):
    """pre_save: the IP stored now, if this save may change it (heartbeats do not)."""
    instance._audit_old_ip = None
    if raw or instance.pk is None or (update_fields is not None and "ip" not in update_fields):
        return
    stored = Host.objects.filter(pk=instance.pk).values_list("ip", flat=True)
    instance._audit_old_ip = stored.first()


def host_ip_changed(sender, instance, created=False, raw=False, **kwargs):
    """post_save: recorded once the row is written, in the same transaction."""
    old = getattr(instance, "_audit_old_ip", None)
    if raw or created or old is None or old == instance.ip:
        return
    record(current_actor(), AuditActionChoices.HOST_CHANGE, targets_resolved=[old, instance.ip],
           detail={"host": instance.pk, "ip": {"from": old, "to": instance.ip}})  # fmt: skip


def connect():
    uid = "cmdb.audit."
    connection_created.connect(register_sqlite_function, dispatch_uid=uid + "sqlite")
    user_login_failed.connect(login_failed, dispatch_uid=uid + "login")
    through = HostGroup.hosts.through
    m2m_changed.connect(membership_changed, sender=through, dispatch_uid=uid + "membership")
    pre_delete.connect(group_deleted, sender=HostGroup, dispatch_uid=uid + "group_deleted")
    pre_save.connect(remember_host_ip, sender=Host, dispatch_uid=uid + "host_ip")
    post_save.connect(host_ip_changed, sender=Host, dispatch_uid=uid + "host_ip_saved")
