"""Network interfaces: addresses, link state and speed, kind, and the members of bonds."""

from __future__ import annotations

import ipaddress
import socket

import psutil

from collectors.base import Collector
from collectors.values import clean

SYSFS_NET = "/sys/class/net/{name}/{file}"
BONDING_PATH = "/proc/net/bonding/{name}"

# The sysfs files interface_kind() looks at, relative to /sys/class/net/<interface>/. A
# directory's presence is tested by reading one file that always exists inside it.
KIND_FILES = ("type", "uevent", "bonding/mode", "bridge/bridge_id", "device/uevent")
ARPHRD_LOOPBACK = "772"  # include/uapi/linux/if_arp.h


def interface_kind(sysfs: dict[str, str | None]) -> str | None:
    """bond, bridge, vlan, loopback, physical or virtual, from KIND_FILES' contents (or None).

    Physical means backed by a device (a PCI or virtio NIC, a USB adapter); virtual is every
    software interface without a more precise kind (veth, tun, dummy, ifb, wireguard...).
    """
    if all(sysfs.get(file) is None for file in KIND_FILES):
        return None  # no sysfs for it: nothing is known
    devtype = _uevent(sysfs.get("uevent") or "").get("DEVTYPE")
    if (sysfs.get("type") or "").strip() == ARPHRD_LOOPBACK:
        return "loopback"
    if devtype == "bond" or sysfs.get("bonding/mode") is not None:
        return "bond"
    if devtype == "bridge" or sysfs.get("bridge/bridge_id") is not None:
        return "bridge"
    if devtype == "vlan":
        return "vlan"
    if sysfs.get("device/uevent") is not None:
        return "physical"
    return "virtual"


def _uevent(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_bonding(text: str) -> dict:
    """Mode, status and members of a bond from its /proc/net/bonding/<bond> file.

    Only unindented "Name: value" lines are read: the indented ones are 802.3ad details
    (partner LACP PDUs...) that reuse names such as "system mac address".
    """
    sections: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line or line[0].isspace():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        if name == "Slave Interface":
            sections.append({})
        sections[-1].setdefault(name.strip(), value.strip())
    bond, members = sections[0], sections[1:]
    return {
        "mode": bond.get("Bonding Mode"),
        "mii_status": bond.get("MII Status"),
        "active_member": clean(bond.get("Currently Active Slave")),
        "members": [
            {
                "name": member["Slave Interface"],
                "mii_status": member.get("MII Status"),
                "speed_mbps": _mbps(member.get("Speed")),
                "duplex": clean(member.get("Duplex")),
                # The bond gives its members its own MAC; this is the one on the card.
                "permanent_mac": clean(member.get("Permanent HW addr")),
                "aggregator_id": _int(member.get("Aggregator ID")),
            }
            for member in members
        ],
    }


def _mbps(text: str | None) -> int | None:
    number = (text or "").split(" ")[0]
    return int(number) if number.isdigit() else None  # "Unknown" for a link that is down


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def addresses(entries) -> tuple[str | None, list[str], list[str]]:
    """(mac, ["a.b.c.d/prefix"...], ["v6/prefix"...]) from one psutil.net_if_addrs() entry."""
    mac, ipv4, ipv6 = None, [], []
    for entry in entries:
        if entry.family == psutil.AF_LINK:
            mac = clean(entry.address)  # an all-zero MAC (tun, some virtual links) is no MAC
        elif entry.family == socket.AF_INET:
            ipv4.append(f"{entry.address}/{_prefix(entry.netmask, 32)}")
        elif entry.family == socket.AF_INET6:
            address = entry.address.split("%", 1)[0]  # psutil appends %<scope> to link-local
            ipv6.append(f"{address}/{_prefix(entry.netmask, 128)}")
    return mac, ipv4, ipv6


def _prefix(netmask: str | None, width: int) -> int:
    if not netmask:
        return width  # point-to-point addresses come without a mask: a host route
    try:
        return bin(int(ipaddress.ip_address(netmask))).count("1")
    except ValueError:
        return width


class NetworkCollector(Collector):
    provides = ("interfaces",)

    def gather(self) -> dict:
        all_addrs = self.source.net_if_addrs()
        all_stats = self.source.net_if_stats()
        interfaces = []
        for name in sorted(set(all_addrs) | set(all_stats)):
            if name == "lo":
                continue
            mac, ipv4, ipv6 = addresses(all_addrs.get(name, ()))
            stats = all_stats.get(name)
            kind = interface_kind(
                {
                    file: self.source.read(SYSFS_NET.format(name=name, file=file))
                    for file in KIND_FILES
                }
            )
            bonding = self.source.read(BONDING_PATH.format(name=name)) if kind == "bond" else None
            interfaces.append(
                {
                    "name": name,
                    "mac": mac,
                    "ipv4": ipv4,
                    "ipv6": ipv6,
                    # psutil says 0 when the driver does not know (virtual links, no carrier).
                    "speed_mbps": (stats.speed or None) if stats else None,
                    "mtu": (stats.mtu or None) if stats else None,
                    "up": stats.isup if stats else None,
                    "kind": kind,
                    "bond": parse_bonding(bonding) if bonding else None,
                }
            )
        return {"interfaces": interfaces}
