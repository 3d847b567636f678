"""`manage.py keys [list | accept IP... | --all | reject IP... | delete IP...]`: agents' keys,
as salt-key shows and decides them."""

from django.core.management.base import CommandError

from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.celery import app
from cmdb.hosts import keys
from cmdb.hosts.choices import KeyStateChoices
from cmdb.hosts.models import Host
from cmdb.jobs import trust
from cmdb.jobs.broker import BROKER_ERRORS
from cmdb.jobs.cli import EXIT_INVALID, FleetCommand
from cmdb.jobs.report import printable

E_NO_IPS = "name the hosts by IP (or --all, to accept every pending key)"


class Command(FleetCommand):
    refused = "nothing changed"
    help = (
        "Agents' keys: list them (pending, accepted, rejected, with fingerprints), accept, "
        "reject or delete them. A host whose key is not accepted receives nothing."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action")
        sub.add_parser("list", help="every key, by state (the default)")
        actions = {"accept": "accept these hosts' keys",
                   "reject": "reject them: the host receives nothing",
                   "delete": "forget them: the next registration is pending"}  # fmt: skip
        for name, text in actions.items():
            action = sub.add_parser(name, help=text)
            action.add_argument("ips", nargs="*", metavar="IP")
            if name == "accept":
                action.add_argument("--all", action="store_true", help="every pending key")

    def handle(self, *args, **opts):
        action = opts.get("action") or "list"
        if action == "list":
            return self._list()
        ips = opts["ips"]
        if action == "accept" and opts.get("all"):
            # Every pending key this user may decide (grants: keys).
            pending = Host.objects.filter(key_state=KeyStateChoices.PENDING)
            ips = list(grants.hosts_for(self.user, Action.KEYS, pending)
                       .values_list("ip", flat=True))  # fmt: skip
        elif not ips:
            raise CommandError(E_NO_IPS, returncode=EXIT_INVALID)
        # A host this user may not see is as unknown to them as one that does not exist.
        visible = grants.hosts_for(self.user, Action.VIEW, Host.objects.filter(ip__in=ips))
        known = set(visible.values_list("ip", flat=True))
        unknown = sorted(set(ips) - known)
        if unknown:
            raise CommandError(f"unknown host(s): {', '.join(unknown)}; nothing changed",
                               returncode=EXIT_INVALID)  # fmt: skip
        done = getattr(keys, action)(ips)
        verb = keys.VERBS[action][0]
        self.stdout.write(f"{verb}: {', '.join(done)}" if done else f"nothing {verb}")

    def _list(self):
        hosts = Host.objects.exclude(key_state=KeyStateChoices.NONE).order_by("key_state", "ip")
        hosts = grants.hosts_for(self.user, Action.VIEW, hosts)
        if not hosts.exists():
            self.stdout.write("no keys yet: agents present theirs when they start")
            return
        shown = (KeyStateChoices.PENDING, KeyStateChoices.ACCEPTED, KeyStateChoices.REJECTED)
        for state in shown:
            rows = [h for h in hosts if h.key_state == state]
            if rows:
                self.stdout.write(f"{state.label}:")
                for h in rows:
                    changed = "  KEY CHANGED" if h.key_changed_at else ""
                    name = printable(h.hostname)  # what an agent said: no escapes to the terminal
                    self.stdout.write(f"  {h.ip:<16} {h.key_fingerprint}  {name}{changed}")
                    if h.candidate_key:
                        # Compare with the host's own (`python -m workers --fingerprint` there).
                        self.stdout.write(
                            f"  {'':<16} new: {h.candidate_fingerprint}  (accept "
                            "takes it; reject keeps the accepted one above)"
                        )
        self._dropped()

    def _dropped(self):
        """What the server did not believe lately: forged or misdirected reports are an attack
        (or a host with a changed key), and an operator deciding keys must see them."""
        try:
            counts = trust.dropped_counts(app)
        except BROKER_ERRORS:
            return
        if counts:
            self.stdout.write("dropped (not believed; the central worker's log says which):")
            for what, count in counts.items():
                self.stdout.write(f"  {count:>8}  {what}")
