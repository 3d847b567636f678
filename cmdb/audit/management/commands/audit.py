"""`manage.py audit verify | export [--since T] [--until T] | prune`."""

import argparse

from django import forms
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cmdb.api.filtersets import MomentField
from cmdb.audit import export
from cmdb.audit.retention import prune
from cmdb.audit.verify import verify

E_BROKEN = "audit trail broken at entry {seq} (id {id}): {reason}"


def moment(value: str):
    """ISO 8601 (naive: UTC) or an age (7d), as the API's since/until take."""
    try:
        return MomentField().clean(value)
    except forms.ValidationError as exc:
        raise argparse.ArgumentTypeError(" ".join(exc.messages)) from None


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain, export it as JSON lines, or apply retention."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("verify", help="walk the chain; exit 1 at the first broken entry")
        exp = sub.add_parser("export", help="entries as JSON lines on stdout, oldest first")
        exp.add_argument("--since", type=moment, help="at or after (ISO 8601 or an age: 7d)")
        exp.add_argument("--until", type=moment, help="before (ISO 8601 or an age)")
        sub.add_parser("prune", help="delete entries older than CMDB_AUDIT_KEEP_DAYS")

    def handle(self, *args, verb, **options):
        getattr(self, verb)(**options)

    def verify(self, **options):
        verdict = verify()
        if not verdict.ok:
            raise CommandError(E_BROKEN.format(**vars(verdict.broken)), returncode=1)
        if verdict.checked == 0:
            self.stdout.write("audit trail empty")
            return
        start = "" if verdict.first == 1 else " (older ones pruned)"
        self.stdout.write(f"audit trail intact: {verdict.checked} entries, "
                          f"{verdict.first} to {verdict.last}{start}")  # fmt: skip

    def export(self, since=None, until=None, **options):
        for line in export.lines(since, until):
            self.stdout.write(line)

    def prune(self, **options):
        keep = settings.CMDB["AUDIT_KEEP_DAYS"]
        if keep <= 0:
            self.stdout.write("CMDB_AUDIT_KEEP_DAYS is 0: the audit trail is kept for ever")
            return
        count = prune(keep)
        self.stdout.write(f"pruned {count} audit entries older than {keep:g} days")
