"""python manage.py grants add USER|@GROUP --actions run,view [--host-group NAME ...]
[--all-hosts] [--where EXPR ...] [--max-hosts N]; grants list; grants remove ID."""

from django.core.management.base import CommandError

from cmdb.access import services
from cmdb.access.models import Action, Grant
from cmdb.jobs.cli import FleetCommand
from cmdb.jobs.exceptions import NotFound, Refused

#: The Django permission each verb needs (grants decide who may act: granting is an admin's).
PERMISSION_OF_VERB = {"add": "access.add_grant", "list": "access.view_grant",
                      "remove": "access.delete_grant"}  # fmt: skip


class Command(FleetCommand):
    help = "Who may do what on which hosts: add, list and remove grants."

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True)
        add = verbs.add_parser("add", help="grant USER (or @GROUP) actions on hosts")
        add.add_argument("principal", help="a username, or @name for a Django group of users")
        add.add_argument("--actions", required=True,
                         help=f"comma-separated: {', '.join(Action.values)}")  # fmt: skip
        add.add_argument("--host-group", action="append", default=[], dest="host_groups",
                         help="a host group the grant covers (repeatable)")  # fmt: skip
        add.add_argument("--all-hosts", action="store_true", help="every host, now and later")
        add.add_argument("--where", action="append", default=[],
                         help="a fact expression hosts must match too (repeatable)")  # fmt: skip
        add.add_argument("--max-hosts", type=int, default=None,
                         help="the most hosts one job may reach without confirming")  # fmt: skip
        add.add_argument("--note", default="")
        verbs.add_parser("list", help="every grant")
        remove = verbs.add_parser("remove", help="remove grant ID")
        remove.add_argument("id", type=int)

    def handle(self, *args, **opts):
        self.require(PERMISSION_OF_VERB[opts["verb"]], f"{opts['verb']} grants")
        try:
            getattr(self, f"_{opts['verb']}")(opts)
        except Refused as exc:
            raise CommandError("; ".join(exc.problems), returncode=2) from None
        except NotFound as exc:
            raise CommandError(str(exc), returncode=1) from None

    def _add(self, opts):
        actions = [a.strip() for a in opts["actions"].split(",") if a.strip()]
        grant = services.add(opts["principal"], actions, opts["host_groups"], opts["all_hosts"],
                             opts["where"], opts["max_hosts"], opts["note"])  # fmt: skip
        self.stdout.write(f"grant {grant.pk}: {grant}")

    def _list(self, opts):
        found = Grant.objects.prefetch_related("users", "groups", "host_groups")
        for grant in found:
            ceiling = "" if grant.max_hosts is None else f" (confirm above {grant.max_hosts} hosts)"
            self.stdout.write(f"{grant.pk:>5}  {grant}{ceiling}")
        if not found:
            self.stdout.write("no grants: only superusers may act on hosts")

    def _remove(self, opts):
        grant = services.remove(opts["id"])
        self.stdout.write(f"removed grant {opts['id']}: {grant.description}")
