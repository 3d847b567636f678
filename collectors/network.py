"""Network interfaces: addresses, link state and speed, kind, and the members of bonds."""

from __future__ import annotations

import ipaddress
import json
import re
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
# Where psutil cannot read the links (a remote host, a sandbox without netlink for psutil), the
# same facts come from iproute2: its JSON where it has one (iproute2 4.13+), else its text.
IP_JSON = ("ip", "-json", "addr", "show")
IP_TEXT = ("ip", "addr", "show")


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


def psutil_links(all_addrs: dict, all_stats: dict) -> dict[str, dict]:
    """{name: mac, ipv4, ipv6, speed_mbps, mtu, up} from psutil's net_if_addrs and net_if_stats.

    An IPv4 alias with a label ("eth0:1") is its own name in getifaddrs, without stats; the
    iproute2 parsers below reproduce that, so both paths report the same interfaces.
    """
    links = {}
    for name in set(all_addrs) | set(all_stats):
        mac, ipv4, ipv6 = addresses(all_addrs.get(name, ()))
        stats = all_stats.get(name)
        links[name] = {
            "mac": mac,
            "ipv4": ipv4,
            "ipv6": ipv6,
            # psutil says 0 when the driver does not know (virtual links, no carrier); a link
            # that is not up has no speed (ethtool still names veth's nominal 10000), and
            # sysfs, which the iproute2 path reads, refuses to say one.
            "speed_mbps": (stats.speed or None) if stats and stats.isup else None,
            "mtu": (stats.mtu or None) if stats else None,
            "up": stats.isup if stats else None,
        }
    return links


# "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 ..." and "5: eth0.100@eth0: <...>".
_IP_LINK = re.compile(r"\d+:\s+([^:@\s]+)(?:@\S*)?:\s+<([^>]*)>(.*)")
_MTU = re.compile(r"\bmtu (\d+)")


def _running(flags) -> bool:
    # psutil's isup is IFF_RUNNING; iproute2 prints that as UP without NO-CARRIER.
    return "UP" in flags and "NO-CARRIER" not in flags


def _link(flags, mtu: int | None, mac: str | None) -> dict:
    return {"mac": clean(mac), "ipv4": [], "ipv6": [], "mtu": mtu or None, "up": _running(flags)}


def _alias(links: dict[str, dict], name: str, label: str | None) -> dict:
    """The entry an IPv4 address belongs to: its link, or its label's own alias entry."""
    if not label or label == name:
        return links[name]
    return links.setdefault(
        label, {"mac": None, "ipv4": [], "ipv6": [], "mtu": None, "up": None, "speed_mbps": None}
    )


def parse_ip_addr(text: str) -> dict[str, dict]:
    """{name: mac, ipv4, ipv6, mtu, up} from `ip addr show` text (any iproute2 since 3.10)."""
    links: dict[str, dict] = {}
    name = None
    for line in text.splitlines():
        head = _IP_LINK.match(line)
        if head:
            name = head[1]
            mtu = _MTU.search(head[3])
            links[name] = _link(head[2].split(","), int(mtu[1]) if mtu else None, None)
            continue
        fields = line.split()
        if name is None or not fields:
            continue
        if fields[0].startswith("link/") and fields[0] != "link/none" and len(fields) > 1:
            links[name]["mac"] = clean(fields[1])
        elif fields[0] in ("inet", "inet6") and len(fields) > 1:
            local, _, prefix = fields[1].partition("/")
            if "peer" in fields[2:3]:  # "inet 10.0.0.1 peer 10.0.0.2/32": the prefix is the peer's
                prefix = fields[3].partition("/")[2] if len(fields) > 3 else ""
            width = 32 if fields[0] == "inet" else 128
            address = f"{local}/{prefix or width}"
            if fields[0] == "inet":
                # The label, when there is one, ends the line ("... secondary eth0:1").
                label = fields[-1] if fields[-1].startswith(name + ":") else None
                _alias(links, name, label)["ipv4"].append(address)
            else:
                links[name]["ipv6"].append(address)
    return links


def parse_ip_json(text: str) -> dict[str, dict]:
    """{name: mac, ipv4, ipv6, mtu, up} from `ip -json addr show`; ValueError if not that."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("ip -json addr did not print a list")
    links: dict[str, dict] = {}
    for entry in data:
        if not isinstance(entry, dict) or not entry.get("ifname"):
            continue
        name = entry["ifname"]
        mac = entry.get("address") if entry.get("link_type") != "none" else None
        links[name] = _link(entry.get("flags") or [], entry.get("mtu"), mac)
        for info in entry.get("addr_info") or []:
            family, local = info.get("family"), info.get("local")
            if family not in ("inet", "inet6") or not local:
                continue
            width = 32 if family == "inet" else 128
            address = f"{local}/{info.get('prefixlen', width)}"
            if family == "inet":
                _alias(links, name, info.get("label"))["ipv4"].append(address)
            else:
                links[name]["ipv6"].append(address)
    return links


def parse_speed(text: str | None) -> int | None:
    """Mb/s from /sys/class/net/<name>/speed; None for -1 (unknown) or a missing file."""
    value = (text or "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class NetworkCollector(Collector):
    provides = ("interfaces",)

    def gather(self) -> dict:
        links = psutil_links(self.source.net_if_addrs(), self.source.net_if_stats())
        if not links:
            links = self._iproute2_links()
        interfaces = []
        for name in sorted(links):
            if name == "lo":
                continue
            link = links[name]
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
                    "mac": link["mac"],
                    "ipv4": link["ipv4"],
                    "ipv6": link["ipv6"],
                    "speed_mbps": link["speed_mbps"],
                    "mtu": link["mtu"],
                    "up": link["up"],
                    "kind": kind,
                    "bond": parse_bonding(bonding) if bonding else None,
                }
            )
        return {"interfaces": interfaces}

    def _iproute2_links(self) -> dict[str, dict]:
        links: dict[str, dict] = {}
        text = self.source.run(IP_JSON)
        try:
            links = parse_ip_json(text) if text else {}
        except ValueError:  # iproute2 before 4.13 prints its text for an unknown -json
            links = {}
        if not links:
            text = self.source.run(IP_TEXT)
            links = parse_ip_addr(text) if text else {}
        for name, link in links.items():
            if "speed_mbps" not in link:
                speed = self.source.read(SYSFS_NET.format(name=name, file="speed"))
                link["speed_mbps"] = parse_speed(speed) if link["up"] else None
        return links
