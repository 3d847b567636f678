"""Grants: actions a user or a Django group may take on a set of hosts.

Why a model of our own and not django-guardian or django-rules. Guardian keeps one row per
object and user: 10,000 hosts by a few teams is a million rows, and a host that joins a group
would need rows written for it. Rules decides per object in Python, so a list of 10,000 hosts
would be checked one by one. What fits is NetBox's ObjectPermission: a permission holds
constraints, and the constraints become one queryset filter. Here the constraints are a host
set: named host groups or all hosts, narrowed by the same fact expressions `--where` takes.
A user may do what any grant of theirs (or of one of their groups) allows.
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class Action(models.TextChoices):
    VIEW = "view", "view (hosts, assets, jobs, outputs, fetched files)"
    RUN = "run", "run a command"
    COLLECT = "collect", "collect facts"
    PUSH = "push", "push files"
    FETCH = "fetch", "fetch a file"
    CANCEL = "cancel", "cancel"
    KEYS = "keys", "manage agent keys"


class Grant(models.Model):
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="grants")
    groups = models.ManyToManyField(Group, blank=True, related_name="grants")
    #: Action values (a list: SQLite has no array column).
    actions = models.JSONField("actions", default=list)
    all_hosts = models.BooleanField("all hosts", default=False)
    host_groups = models.ManyToManyField("hosts.HostGroup", blank=True, related_name="grants")
    #: Fact expressions (as --where takes them), all of which a host must match.
    where = models.JSONField("where", default=list, blank=True)
    #: The most hosts one job may reach under this grant without confirming (none: the
    #: server's CMDB_CONFIRM_ABOVE).
    max_hosts = models.PositiveIntegerField("host ceiling", null=True, blank=True)
    note = models.CharField("note", max_length=255, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self):
        who = [u.get_username() for u in self.users.all()]
        who += [f"@{g.name}" for g in self.groups.all()]
        hosts = "all hosts" if self.all_hosts else ", ".join(g.name for g in self.host_groups.all())
        where = f" where {' and '.join(self.where)}" if self.where else ""
        actions = ", ".join(self.actions)
        return f"{', '.join(who) or 'nobody'}: {actions} on {hosts or 'no hosts'}{where}"
