"""`manage.py groups [list|add NAME IP...|remove NAME [IP...]]`: named sets of hosts."""

from django.core.management.base import CommandError

from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.hosts.models import HostGroup, TargetError
from cmdb.jobs.cli import FleetCommand


class Command(FleetCommand):
    help = "List host groups; add hosts to a group (made if new); remove hosts or a whole group."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action")
        sub.add_parser("list", help="groups and their hosts (the default)")
        add = sub.add_parser("add", help="add hosts (IPs or hostnames) to a group")
        add.add_argument("name")
        add.add_argument("hosts", nargs="+")
        remove = sub.add_parser("remove", help="remove hosts from a group, or the whole group")
        remove.add_argument("name")
        remove.add_argument("hosts", nargs="*")

    def handle(self, *args, **opts):
        action = opts.get("action") or "list"
        if action == "list":
            visible = set(grants.hosts_for(self.user, Action.VIEW).values_list("pk", flat=True))
            for group in HostGroup.objects.prefetch_related("hosts"):
                ips = " ".join(h.ip for h in group.hosts.all() if h.pk in visible)
                self.stdout.write(f"{group.name:<20} {ips}")
            return
        # Grants are by group: who changes its members changes who may act on them.
        self.require("hosts.change_hostgroup_members", "change which hosts are in a group")
        # A host this user may not see is as unknown to them as one that does not exist.
        visible = grants.hosts_for(self.user, Action.VIEW)
        try:
            hosts = visible.resolve(opts["hosts"]) if opts["hosts"] else []
        except TargetError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if action == "add":
            if not HostGroup.objects.filter(name=opts["name"]).exists():
                self.require("hosts.add_hostgroup", "make a new group")
            group, _ = HostGroup.objects.get_or_create(name=opts["name"])
            group.hosts.add(*hosts)
            self.stdout.write(f"{group.name}: {group.hosts.count()} host(s)")
            return
        group = HostGroup.objects.filter(name=opts["name"]).first()
        if group is None:
            raise CommandError(f"unknown group {opts['name']!r}", returncode=2)
        if hosts:
            group.hosts.remove(*hosts)
            self.stdout.write(f"{group.name}: {group.hosts.count()} host(s)")
        else:
            self.require("hosts.delete_hostgroup", "remove a whole group")
            group.delete()
            self.stdout.write(f"removed group {opts['name']}")
