"""`manage.py hosts [list|add|remove]`: the inventory of managed hosts."""

import ipaddress

from django.core.management.base import CommandError
from django.db import IntegrityError

from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.hosts.models import Host
from cmdb.jobs.cli import FleetCommand
from cmdb.jobs.report import printable


class Command(FleetCommand):
    help = "List, add or remove managed hosts."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action")
        sub.add_parser("list", help="list hosts (the default)")
        add = sub.add_parser("add", help="add hosts by IP")
        add.add_argument("ips", nargs="+")
        add.add_argument("--hostname", default="", help="hostname (with a single IP)")
        remove = sub.add_parser("remove", help="remove hosts by IP (their job history stays)")
        remove.add_argument("ips", nargs="+")

    def handle(self, *args, **opts):
        action = opts.get("action") or "list"
        getattr(self, f"_{action}")(opts)

    def _list(self, opts):
        hosts = list(grants.hosts_for(self.user, Action.VIEW))
        if not hosts:
            self.stdout.write("no hosts yet: start an agent, or `manage.py hosts add IP`")
            return
        self.stdout.write(f"{'IP':<16} {'HOSTNAME':<24} {'AGENT':<8} LAST SEEN")
        for h in hosts:
            seen = h.last_seen.strftime("%Y-%m-%d %H:%M:%S") if h.last_seen else "never"
            name = printable(h.hostname)  # an agent's word: no escapes to the terminal
            self.stdout.write(f"{h.ip:<16} {name:<24} {h.agent_status:<8} {seen}")

    def _ips(self, raw: list[str]) -> list[str]:
        ips, bad = [], []
        for value in raw:
            try:
                ips.append(str(ipaddress.IPv4Address(value.strip())))
            except ValueError:
                bad.append(value)
        if bad:
            raise CommandError(f"malformed IP address: {', '.join(map(repr, bad))}", returncode=2)
        return ips

    def _add(self, opts):
        self.require("hosts.add_host", "add hosts")
        ips = self._ips(opts["ips"])
        if opts["hostname"] and len(ips) > 1:
            raise CommandError("--hostname names one host; give one IP with it", returncode=2)
        for ip in ips:
            try:
                _, created = Host.objects.get_or_create(
                    ip=ip, defaults={"hostname": opts["hostname"]}
                )
            except IntegrityError as exc:
                raise CommandError(f"could not add {ip}: {exc}") from None
            self.stdout.write(f"{'added' if created else 'already known'}: {ip}")

    def _remove(self, opts):
        self.require("hosts.delete_host", "remove hosts")
        ips = self._ips(opts["ips"])
        # A host this user may not see is as unknown to them as one that does not exist.
        visible = grants.hosts_for(self.user, Action.VIEW, Host.objects.filter(ip__in=ips))
        unknown = sorted(set(ips) - set(visible.values_list("ip", flat=True)))
        if unknown:
            raise CommandError(
                f"unknown host(s): {', '.join(unknown)}; nothing removed", returncode=2
            )
        _count, _ = Host.objects.filter(ip__in=ips).delete()
        self.stdout.write(f"removed {len(ips)} host(s)")
