"""`manage.py changes [HOST] [--since 7d]`: what changed on hosts, newest first."""

import re
from datetime import timedelta

from django.core.management.base import CommandError
from django.utils import timezone

from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.assets.models import Change
from cmdb.hosts.models import TargetError
from cmdb.jobs.cli import FleetCommand

SINCE = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str) -> timedelta:
    match = SINCE.match(value.strip())
    if not match:
        raise ValueError(f"--since {value!r}: expected a number and one of s m h d w, like 7d")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(FleetCommand):
    help = "Print the change history of one host or all, newest first."

    def add_arguments(self, parser):
        parser.add_argument("host", nargs="?", help="IP or hostname (default: every host)")
        parser.add_argument("--since", default="7d", help="how far back (30m, 12h, 7d, 2w)")
        parser.add_argument("--limit", type=int, default=500)

    def handle(self, *args, **opts):
        try:
            since = timezone.now() - parse_since(opts["since"])
            visible = grants.hosts_for(self.user, Action.VIEW)
            changes = Change.objects.filter(time__gte=since, host__in=visible)
            changes = changes.select_related("host")
            if opts["host"]:
                (host,) = visible.resolve([opts["host"]])
                changes = changes.filter(host=host)
        except (ValueError, TargetError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        rows = list(changes[: opts["limit"]])
        if not rows:
            self.stdout.write(f"no changes since {since:%Y-%m-%d %H:%M}")
        for change in rows:
            self.stdout.write(f"{change.time:%Y-%m-%d %H:%M:%S}  {change.host.ip:<15}  {change}")
