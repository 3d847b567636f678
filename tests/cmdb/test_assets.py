"""Asset rows, change history and --where, on consecutive reports (no agent needed)."""

import copy

import pytest

from cmdb.assets.models import Asset, Change, FactReport, HostFacts
from cmdb.assets.store import store_report
from cmdb.assets.where import parse
from cmdb.hosts.models import Host
from cmdb.jobs.dispatch import CommandRequest, Problems, _select_hosts
from cmdb.jobs.exceptions import Refused
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db

GIB = 2**30


def report(**overrides) -> dict:
    facts = {
        "system": {"hostname": "web1", "fqdn": "web1.example", "os_id": "debian",
                   "os_version": "12", "kernel": "6.1.0", "arch": "x86_64", "uptime_s": 5,
                   "boot_time": 1700000000},
        "cpu": {"model": "Xeon", "sockets": 2, "cores": 16, "threads": 32, "mhz": 2100.5},
        "memory": {"total_bytes": 64 * GIB, "swap_bytes": 0, "dimms": []},
        "disks": {
            "devices": [{"name": "sda", "serial": "S1", "size_bytes": 500 * GIB, "type": "disk",
                         "model": "SSD", "rotational": False}],
            "mounts": [{"mountpoint": "/", "device": "/dev/sda1", "fstype": "ext4",
                        "size_bytes": 100 * GIB, "used_bytes": 60 * GIB,
                        "free_bytes": 40 * GIB, "used_pct": 60.0}],
        },
        "network": {"interfaces": [{"name": "eth0", "mac": "AA:BB:CC:00:00:01",
                                    "ipv4": ["10.0.3.55/24"], "ipv6": [], "mtu": 1500,
                                    "up": True, "speed_mbps": 1000, "kind": "physical"}]},
        "hardware": {"vendor": "Dell Inc.", "product": "R640", "serial": "ABC123"},
    }  # fmt: skip
    for path, value in overrides.items():
        *parents, last = path.split(".")
        target = facts
        for name in parents:
            target = target[name]
        target[last] = value
    return {"version": 1, "collected_at": 1795000000.0, "facts": facts, "errors": {}}


@pytest.fixture
def host():
    return make_host("10.0.3.55", hostname="web1")


def changes(host) -> list[str]:
    return sorted(str(c) for c in Change.objects.filter(host=host))


def test_first_collection_is_one_discovered_entry_not_hundreds_of_additions(host):
    made = store_report(host, report())

    assert [c.action for c in made] == ["discovered"]
    assert Asset.objects.filter(host=host).count() == 7
    assert FactReport.objects.get(host=host).size_bytes > 0
    assert HostFacts.objects.get(host=host).os == "debian"


def test_nothing_changed_writes_nothing(host):
    store_report(host, report())
    # Values that move all the time are facts, not changes.
    again = report(**{"system.uptime_s": 999, "cpu.mhz": 3000.0})
    again["facts"]["disks"]["mounts"][0].update(used_bytes=61 * GIB, free_bytes=39 * GIB)

    assert store_report(host, again) == []
    assert Change.objects.filter(host=host).count() == 1
    assert Asset.objects.get(host=host, kind="mount").metrics["free_bytes"] == 39 * GIB


def test_a_disk_added_removed_and_resized(host):
    store_report(host, report())
    second = report()
    second["facts"]["disks"]["devices"].append(
        {"name": "sdb", "serial": "S2", "size_bytes": GIB, "type": "disk"}
    )
    store_report(host, second)
    third = copy.deepcopy(second)
    third["facts"]["disks"]["devices"] = [dict(second["facts"]["disks"]["devices"][1],
                                               size_bytes=2 * GIB)]  # fmt: skip

    made = store_report(host, third)

    assert sorted(str(c) for c in made) == [
        "disk serial:S2: size_bytes 1073741824 -> 2147483648",
        "removed disk serial:S1",
    ]
    assert "added disk serial:S2" in changes(host)
    assert set(Asset.objects.filter(host=host, kind="disk").values_list("key", flat=True)) == {
        "serial:S2"
    }


def test_a_renamed_disk_with_the_same_serial_is_a_change_not_a_swap(host):
    store_report(host, report())

    made = store_report(host, report(**{"disks.devices": [
        {"name": "sdc", "serial": "S1", "size_bytes": 500 * GIB, "type": "disk", "model": "SSD",
         "rotational": False}]}))  # fmt: skip

    assert [str(c) for c in made] == ["disk serial:S1: name 'sda' -> 'sdc'"]


def test_a_nic_address_change_is_recorded_by_mac(host):
    store_report(host, report())
    nic = dict(report()["facts"]["network"]["interfaces"][0], ipv4=["10.0.3.56/24"])

    made = store_report(host, report(**{"network.interfaces": [nic]}))

    assert [str(c) for c in made] == [
        "nic mac:aa:bb:cc:00:00:01: ipv4 ['10.0.3.55/24'] -> ['10.0.3.56/24']"
    ]


def test_a_failed_plugin_does_not_read_as_everything_removed(host):
    store_report(host, report())
    partial = report()
    del partial["facts"]["disks"]
    partial["errors"] = {"disks": {"error": "OSError: lsblk failed", "traceback": "..."}}

    assert store_report(host, partial) == []
    assert Asset.objects.filter(host=host, kind="disk").count() == 1


@pytest.mark.parametrize(
    ("expr", "matches"),
    [
        ("os=debian", {"a"}),
        ("os!=debian", {"b", "c"}),
        ("disk_free_pct<10", {"b"}),
        ("memory_gb>=32", {"a"}),
        ("cpu_model~xeon", {"a", "b"}),
        ("hostname=c", {"c"}),
    ],
)
def test_where_selects_hosts_by_stored_facts(expr, matches):
    hosts = {
        name: make_host(ip, hostname=name)
        for name, ip in (("a", "10.9.0.1"), ("b", "10.9.0.2"), ("c", "10.9.0.3"))
    }
    store_report(hosts["a"], report())
    low = report(**{"system.os_id": "ubuntu", "memory.total_bytes": 8 * GIB})
    low["facts"]["disks"]["mounts"][0].update(free_bytes=5 * GIB)
    store_report(hosts["b"], low)

    selected = Host.objects.filter(parse(expr))

    assert {h.hostname for h in selected} == matches


def test_where_narrows_explicit_targets_and_refuses_bad_expressions(host):
    other = make_host("10.0.3.56", hostname="db1")
    store_report(host, report())
    store_report(other, report(**{"system.os_id": "centos"}))

    assert _select_hosts(CommandRequest(where=["os=centos"]), Problems()) == [other]
    problems = Problems()
    assert _select_hosts(CommandRequest(targets=["web1"], where=["os=centos"]), problems) == []
    assert problems == {"targets": ["no host matches the targets given"]}
    with pytest.raises(Refused, match="unknown field 'colour'"):
        from cmdb.jobs.dispatch import _validate

        _validate(CommandRequest(command="true", where=["colour=red"]))


@pytest.mark.parametrize("expr", ["memory_gb>inf", "memory_gb>1e300", "disk_free_pct<nan"])
def test_where_refuses_numbers_that_are_not_finite(expr):
    with pytest.raises(ValueError, match="compares numbers"):
        Host.objects.filter(parse(expr)).count()
