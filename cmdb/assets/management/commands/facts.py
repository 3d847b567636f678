"""`manage.py facts HOST`: what the CMDB knows about a host now."""

import json

from django.core.management.base import CommandError

from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.assets.models import Asset, HostFacts
from cmdb.hosts.models import TargetError
from cmdb.jobs.cli import FleetCommand


def _size(value) -> str:
    if not isinstance(value, int):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def describe(asset: Asset) -> str:
    d, m = asset.data, asset.metrics
    match asset.kind:
        case "system":
            return (
                f"{d.get('os_pretty') or d.get('os_id')}, kernel {d.get('kernel')}, {d.get('arch')}"
            )
        case "cpu":
            return (f"{d.get('model')}: {d.get('sockets')} socket(s), {d.get('cores')} cores, "
                    f"{d.get('threads')} threads")  # fmt: skip
        case "memory":
            return f"{_size(d.get('total_bytes'))}, swap {_size(d.get('swap_bytes'))}"
        case "disk":
            size = _size(d.get("size_bytes"))
            return f"{d.get('name')} {d.get('type')} {size} {d.get('model') or ''}".rstrip()
        case "mount":
            return (f"{asset.key} {d.get('fstype')} {_size(d.get('size_bytes'))}, "
                    f"{m.get('used_pct')}% used")  # fmt: skip
        case "nic":
            addresses = ", ".join((d.get("ipv4") or []) + (d.get("ipv6") or []))
            state = "up" if d.get("up") else "down"
            return f"{d.get('name')} {d.get('mac') or ''} {state} {addresses}".rstrip()
        case _:
            known = ", ".join(f"{k}={v}" for k, v in d.items() if v not in (None, "", []))
            return known or "(nothing readable on this host)"


class Command(FleetCommand):
    help = "Print the current facts of a host (by IP or hostname)."

    def add_arguments(self, parser):
        parser.add_argument("host")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **opts):
        try:
            (host,) = grants.hosts_for(self.user, Action.VIEW).resolve([opts["host"]])
        except TargetError as exc:
            raise CommandError(str(exc), returncode=2) from None
        assets = list(Asset.objects.filter(host=host))
        summary = HostFacts.objects.filter(host=host).first()
        if opts["json"]:
            self.stdout.write(json.dumps({
                "host": host.ip, "hostname": host.hostname,
                "collected_at": summary.collected_at.isoformat() if summary else None,
                "assets": [{"kind": a.kind, "key": a.key, "data": a.data, "metrics": a.metrics}
                           for a in assets],
            }, indent=2))  # fmt: skip
            return
        if not assets:
            self.stdout.write(f"{host}: no facts yet (`manage.py collect --hosts {host.ip}`)")
            return
        self.stdout.write(f"{host}: facts collected {summary.collected_at:%Y-%m-%d %H:%M:%S}")
        for asset in assets:
            self.stdout.write(f"  {asset.kind:<9} {describe(asset)}")
