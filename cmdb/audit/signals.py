"""What the app records by itself: failed logins, host group membership, host IP changes, and
changes to what a user may do (their Django groups, which carry grants, their permissions,
and the superuser, staff and active flags).

Connected from AppConfig.ready(). Changes made with QuerySet.update() send no signal: the
service layer records those itself (cmdb.audit.record).
"""

from django.contrib.auth.models import Group, Permission, User
from django.contrib.auth.signals import user_login_failed
from django.db.backends.signals import connection_created
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from rest_framework.authtoken.models import Token, TokenProxy

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


#: The flags of a user that change what they may do.
USER_FLAGS = ("is_superuser", "is_staff", "is_active")


def user_m2m_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    """A user's groups or permissions changed (from the user's side or the group's)."""
    if action not in MEMBERSHIP or (not pk_set and action != "post_clear"):
        return
    what = "groups" if model is Group or sender is User.groups.through else "permissions"
    if reverse:  # group.user_set.add(user, ...): the instance is the group (or permission)
        users = list(User.objects.filter(pk__in=pk_set or []).order_by("username"))
        names = [_name(instance)]
    else:
        users = [instance]
        names = sorted(_name(o) for o in model.objects.filter(pk__in=pk_set or []))
    change = {MEMBERSHIP[action]: names or ["all"]}
    for user in users:
        record(current_actor(), AuditActionChoices.USER_ACCESS,
               detail={"user": user.get_username(), what: change})  # fmt: skip


def _name(obj) -> str:
    if isinstance(obj, Permission):
        return f"{obj.content_type.app_label}.{obj.codename}"
    return str(obj)


def remember_user_flags(sender, instance, raw=False, **kwargs):
    instance._audit_flags = None
    if not raw and instance.pk is not None:
        instance._audit_flags = User.objects.filter(pk=instance.pk).values(*USER_FLAGS).first()


def user_flags_changed(sender, instance, created=False, raw=False, **kwargs):
    before = getattr(instance, "_audit_flags", None)
    if raw or (before is None and not created):
        return
    now = {flag: getattr(instance, flag) for flag in USER_FLAGS}
    changed = {f: now[f] for f in USER_FLAGS if before is None or before[f] != now[f]}
    if created:
        changed = {f: v for f, v in now.items() if v and f != "is_active"}
    if changed:
        record(current_actor(), AuditActionChoices.USER_ACCESS,
               detail={"user": instance.get_username(), "created": created, **changed})  # fmt: skip


def group_permissions_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    """A Django group's permissions changed: every member's changed with them."""
    if action not in MEMBERSHIP or (not pk_set and action != "post_clear"):
        return
    if reverse:  # permission.group_set.add(group, ...)
        groups, perms = list(Group.objects.filter(pk__in=pk_set or [])), [_name(instance)]
    else:
        groups = [instance]
        perms = sorted(_name(p) for p in Permission.objects.filter(pk__in=pk_set or []))
    change = {MEMBERSHIP[action]: perms or ["all"]}
    for group in groups:
        record(current_actor(), AuditActionChoices.USER_ACCESS,
               detail={"group": group.name, "permissions": change})  # fmt: skip


def host_added(sender, instance, created=False, raw=False, **kwargs):
    if created and not raw:
        record(current_actor(), AuditActionChoices.HOST_ADD, targets_resolved=[instance.ip],
               detail={"host": instance.pk, "hostname": instance.hostname})  # fmt: skip


def host_removed(sender, instance, **kwargs):
    """pre_delete: with the groups it leaves (their m2m rows go without a signal)."""
    groups = sorted(instance.groups.values_list("name", flat=True))
    record(current_actor(), AuditActionChoices.HOST_REMOVE, targets_resolved=[instance.ip],
           detail={"host": instance.pk, "groups": groups})  # fmt: skip


def token_made(sender, instance, created=False, raw=False, **kwargs):
    if created and not raw:  # never the key itself: it is the user's password
        record(current_actor(), AuditActionChoices.TOKEN_ADD,
               detail={"user": instance.user.get_username()})  # fmt: skip


def token_deleted(sender, instance, **kwargs):
    record(current_actor(), AuditActionChoices.TOKEN_REMOVE,
           detail={"user": instance.user.get_username()})  # fmt: skip


def connect():
    uid = "cmdb.audit."
    connection_created.connect(register_sqlite_function, dispatch_uid=uid + "sqlite")
    user_login_failed.connect(login_failed, dispatch_uid=uid + "login")
    through = HostGroup.hosts.through
    m2m_changed.connect(membership_changed, sender=through, dispatch_uid=uid + "membership")
    for name, through in (("groups", User.groups.through),
                          ("permissions", User.user_permissions.through)):  # fmt: skip
        m2m_changed.connect(user_m2m_changed, sender=through, dispatch_uid=uid + f"user_{name}")
    m2m_changed.connect(group_permissions_changed, sender=Group.permissions.through,
                        dispatch_uid=uid + "group_permissions")  # fmt: skip
    post_save.connect(host_added, sender=Host, dispatch_uid=uid + "host_added")
    for model in (Token, TokenProxy):  # the admin saves the proxy, the API the model
        post_save.connect(token_made, sender=model, dispatch_uid=uid + f"token_{model.__name__}")
        post_delete.connect(token_deleted, sender=model,
                            dispatch_uid=uid + f"token_gone_{model.__name__}")  # fmt: skip
    pre_delete.connect(host_removed, sender=Host, dispatch_uid=uid + "host_removed")
    pre_save.connect(remember_user_flags, sender=User, dispatch_uid=uid + "user_flags")
    post_save.connect(user_flags_changed, sender=User, dispatch_uid=uid + "user_flags_saved")
    pre_delete.connect(group_deleted, sender=HostGroup, dispatch_uid=uid + "group_deleted")
    pre_save.connect(remember_host_ip, sender=Host, dispatch_uid=uid + "host_ip")
    post_save.connect(host_ip_changed, sender=Host, dispatch_uid=uid + "host_ip_saved")
