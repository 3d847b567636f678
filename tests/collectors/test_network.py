"""Tests for collectors.network: bonding files, interface kinds from sysfs, psutil addresses."""

import socket
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from collectors.network import NetworkCollector, addresses, interface_kind, parse_bonding

DATA = Path(__file__).parent / "data" / "network"


def data(name: str) -> str:
    return (DATA / name).read_text()


def addr(family, address, netmask=None):
    """One psutil.net_if_addrs() entry."""
    return SimpleNamespace(
        family=family, address=address, netmask=netmask, broadcast=None, ptp=None
    )


def stats(isup=True, speed=0, mtu=1500):
    """One psutil.net_if_stats() entry."""
    return SimpleNamespace(isup=isup, duplex=0, speed=speed, mtu=mtu, flags="")


def sysfs_of(tree: dict[str, str], name: str) -> dict[str, str | None]:
    """interface_kind()'s input for one interface of a captured /sys/class/net tree."""
    prefix = f"/sys/class/net/{name}/"
    files = ("type", "uevent", "bonding/mode", "bridge/bridge_id", "device/uevent")
    return {f: tree.get(prefix + f) for f in files}


# --- /proc/net/bonding -------------------------------------------------------------------------


def test_lacp_bond_members_and_their_permanent_macs():
    bond = parse_bonding(data("proc_net_bonding_bond0_8023ad"))
    assert bond == {
        "mode": "IEEE 802.3ad Dynamic link aggregation",
        "mii_status": "up",
        "active_member": None,
        "members": [
            {
                "name": "eno1",
                "mii_status": "up",
                "speed_mbps": 10000,
                "duplex": "full",
                "permanent_mac": "3c:ec:ef:12:34:56",
                "aggregator_id": 1,
            },
            {
                "name": "eno2",
                "mii_status": "up",
                "speed_mbps": 10000,
                "duplex": "full",
                "permanent_mac": "3c:ec:ef:12:34:57",
                "aggregator_id": 1,
            },
        ],
    }


def test_lacp_partner_details_do_not_leak_into_members():
    # The indented "system mac address" lines are the partner switch's, not the member's.
    for member in parse_bonding(data("proc_net_bonding_bond0_8023ad"))["members"]:
        assert member["permanent_mac"].startswith("3c:ec:ef")


def test_active_backup_bond_with_a_member_down():
    bond = parse_bonding(data("proc_net_bonding_bond1_active_backup"))
    assert bond["mode"] == "fault-tolerance (active-backup)"
    assert bond["active_member"] == "ens2f0"
    down = bond["members"][1]
    assert down == {
        "name": "ens2f1",
        "mii_status": "down",
        "speed_mbps": None,
        "duplex": None,
        "permanent_mac": "00:25:90:85:81:f3",
        "aggregator_id": None,
    }


# --- interface kinds ---------------------------------------------------------------------------


def test_interface_kinds_on_this_host(captured):
    tree = captured.tree("network/sys_class_net_this_host", "/sys/class/net")
    assert interface_kind(sysfs_of(tree, "eth0")) == "physical"  # a virtio NIC has a device
    assert interface_kind(sysfs_of(tree, "ifb0")) == "virtual"
    assert interface_kind(sysfs_of(tree, "lo")) == "loopback"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("eno1", "physical"),
        ("eno2", "physical"),
        ("bond0", "bond"),
        ("bond0.20", "vlan"),
        ("br0", "bridge"),
        ("vnet0", "virtual"),
        ("wg0", "virtual"),
        ("lo", "loopback"),
        ("absent0", None),
    ],
)
def test_interface_kinds_on_a_bonded_server(captured, name, kind):
    tree = captured.tree("network/sys_class_net_bonded_server", "/sys/class/net")
    assert interface_kind(sysfs_of(tree, name)) == kind


def test_bond_is_recognised_by_its_bonding_directory_without_devtype():
    assert interface_kind({"type": "1\n", "bonding/mode": "active-backup 1\n"}) == "bond"


# --- addresses ---------------------------------------------------------------------------------


def test_addresses_with_prefix_lengths_and_without_ipv6_scope():
    mac, ipv4, ipv6 = addresses(
        [
            addr(socket.AF_INET, "192.0.2.2", "255.255.255.0"),
            addr(socket.AF_INET6, "fd00::2", "ffff:ffff:ffff:ffff::"),
            addr(socket.AF_INET6, "fe80::fc:ff:fe00:1%eth0", "ffff:ffff:ffff:ffff::"),
            addr(psutil.AF_LINK, "02:fc:00:00:00:01"),
            addr(socket.AF_INET, "10.8.0.1", None),  # point-to-point: no mask
        ]
    )
    assert mac == "02:fc:00:00:00:01"
    assert ipv4 == ["192.0.2.2/24", "10.8.0.1/32"]
    assert ipv6 == ["fd00::2/64", "fe80::fc:ff:fe00:1/64"]


def test_all_zero_mac_is_none():
    assert addresses([addr(psutil.AF_LINK, "00:00:00:00:00:00")])[0] is None


# --- the collector -----------------------------------------------------------------------------


def test_collector_on_a_bonded_server(fake_source, captured):
    files = captured.tree("network/sys_class_net_bonded_server", "/sys/class/net")
    files["/proc/net/bonding/bond0"] = data("proc_net_bonding_bond0_8023ad")
    mac = "3c:ec:ef:12:34:56"
    source = fake_source(
        files=files,
        net_if_addrs={
            "lo": [addr(socket.AF_INET, "127.0.0.1", "255.0.0.0")],
            "eno1": [addr(psutil.AF_LINK, mac)],
            "eno2": [addr(psutil.AF_LINK, mac)],  # members carry the bond's MAC
            "bond0": [
                addr(socket.AF_INET, "10.0.20.17", "255.255.255.0"),
                addr(socket.AF_INET, "10.0.20.99", "255.255.255.0"),
                addr(socket.AF_INET6, "fe80::3eec:efff:fe12:3456%bond0", "ffff:ffff:ffff:ffff::"),
                addr(psutil.AF_LINK, mac),
            ],
            "bond0.20": [addr(socket.AF_INET, "10.0.21.17", "255.255.254.0")],
        },
        net_if_stats={
            "lo": stats(mtu=65536),
            "eno1": stats(speed=10000, mtu=9000),
            "eno2": stats(speed=10000, mtu=9000),
            "bond0": stats(speed=20000, mtu=9000),
            "bond0.20": stats(speed=20000, mtu=9000),
            "vnet0": stats(isup=False),
        },
    )

    interfaces = {i["name"]: i for i in NetworkCollector(source).collect()["interfaces"]}

    assert list(interfaces) == ["bond0", "bond0.20", "eno1", "eno2", "vnet0"]  # sorted, no lo
    bond0 = interfaces["bond0"]
    assert bond0["kind"] == "bond"
    assert bond0["ipv4"] == ["10.0.20.17/24", "10.0.20.99/24"]
    assert bond0["ipv6"] == ["fe80::3eec:efff:fe12:3456/64"]
    assert (bond0["speed_mbps"], bond0["mtu"], bond0["up"]) == (20000, 9000, True)
    assert [m["name"] for m in bond0["bond"]["members"]] == ["eno1", "eno2"]
    assert interfaces["bond0.20"]["kind"] == "vlan"
    assert interfaces["bond0.20"]["ipv4"] == ["10.0.21.17/23"]
    assert interfaces["eno1"]["kind"] == "physical"
    assert interfaces["eno1"]["bond"] is None
    assert interfaces["vnet0"] == {
        "name": "vnet0",
        "mac": None,
        "ipv4": [],
        "ipv6": [],
        "speed_mbps": None,  # psutil says 0 when unknown
        "mtu": 1500,
        "up": False,
        "kind": "virtual",
        "bond": None,
    }


def test_bond_without_readable_proc_file_has_no_members(fake_source):
    source = fake_source(
        files={"/sys/class/net/bond0/uevent": "DEVTYPE=bond\nINTERFACE=bond0\nIFINDEX=6\n"},
        net_if_stats={"bond0": stats()},
    )
    (bond0,) = NetworkCollector(source).collect()["interfaces"]
    assert (bond0["kind"], bond0["bond"]) == ("bond", None)
