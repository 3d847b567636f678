"""collectors.grains on a minion's real answers (captured from salt 3008.4 on this repo's
Debian 12 sandbox: see data/README.md), field by field."""

import json
from pathlib import Path

import pytest

from cmdb.assets.normalize import normalize
from collectors import REPORT_VERSION
from collectors.grains import SALT_FUNCTIONS, facts_from_salt, report_from_salt

DATA = Path(__file__).parent / "data" / "salt"


@pytest.fixture
def answers() -> dict:
    return json.loads((DATA / "salt-debian12-container.json").read_text())


def test_the_capture_answers_every_function_asked(answers):
    assert set(SALT_FUNCTIONS) <= set(answers)


def test_system(answers):
    assert facts_from_salt(answers)["system"] == {
        "hostname": "vm",
        "fqdn": "vm",
        "os_id": "debian",
        "os_name": "Debian GNU/Linux",
        "os_version": "12",
        "os_pretty": "Debian GNU/Linux 12 (bookworm)",
        "kernel": "6.18.44-fc-v1147",
        "arch": "x86_64",
        "uptime_s": 7049,
        "boot_time": 1796293175,
    }


def test_cpu_knows_only_logical_cpus(answers):
    assert facts_from_salt(answers)["cpu"] == {
        "model": "AMD EPYC", "sockets": None, "cores": None, "threads": 2, "mhz": None,
    }  # fmt: skip


def test_memory_in_bytes_from_meminfo_kib(answers):
    assert facts_from_salt(answers)["memory"] == {
        "total_bytes": 24683664 * 1024, "swap_bytes": 0, "dimms": [],
    }  # fmt: skip


def test_memory_falls_back_to_the_grains_mib(answers):
    del answers["status.meminfo"]
    memory = facts_from_salt(answers)["memory"]
    assert memory["total_bytes"] == 24105 * 2**20
    assert memory["swap_bytes"] == 0


def test_disks_and_the_agents_mount_filter(answers):
    disks = facts_from_salt(answers)["disks"]
    assert disks["devices"] == [
        {"name": "vda", "kname": "vda", "model": None, "serial": None, "size_bytes": None,
         "type": "disk", "rotational": True, "wwn": None, "parent": None},
    ]  # fmt: skip
    # devtmpfs, tmpfs, /proc, /sys and the sandbox's tooling mount are all dropped, as the
    # agent drops them: only the root filesystem holds data here.
    assert disks["mounts"] == [
        {"mountpoint": "/", "device": "/dev/vda", "fstype": "ext4",
         "size_bytes": 264212084 * 1024, "used_bytes": 23950328 * 1024,
         "free_bytes": 82440584 * 1024, "used_pct": 22.5},
    ]  # fmt: skip


def test_an_ssd_is_not_rotational(answers):
    answers["grains.items"]["ssds"] = ["nvme0n1"]
    devices = {d["name"]: d for d in facts_from_salt(answers)["disks"]["devices"]}
    assert devices["nvme0n1"]["rotational"] is False
    assert devices["vda"]["rotational"] is True


def test_network_with_prefixes_and_no_loopback(answers):
    nics = facts_from_salt(answers)["network"]["interfaces"]
    assert [n["name"] for n in nics] == ["eth0", "ifb0", "ifb1"]
    assert nics[0] == {
        "name": "eth0", "mac": "02:fc:00:00:00:01", "ipv4": ["192.0.2.2/24"],
        "ipv6": ["fd00::2/64", "fe80::fc:ff:fe00:1/64"], "speed_mbps": None, "mtu": None,
        "up": True, "kind": None, "bond": None,
    }  # fmt: skip
    assert nics[1]["up"] is False and nics[1]["ipv4"] == []


def test_network_from_the_grains_alone(answers):
    del answers["network.interfaces"]
    nics = {n["name"]: n for n in facts_from_salt(answers)["network"]["interfaces"]}
    assert set(nics) == {"eth0", "ifb0", "ifb1"}
    assert nics["eth0"]["ipv4"] == ["192.0.2.2/32"]  # no netmask in the grains: a host route
    assert nics["eth0"]["mac"] == "02:fc:00:00:00:01"


def test_hardware_none_in_a_container(answers):
    assert set(facts_from_salt(answers)["hardware"].values()) == {None}


def test_hardware_smbios_grains_cleaned(answers):
    # The SMBIOS grains Salt sets on bare metal (names as in salt/grains/core.py).
    answers["grains.items"].update(
        manufacturer="Dell Inc.", productname="PowerEdge R740", serialnumber="7XK2M53",
        uuid="4C4C4544-0058-4B10-8032-B7C04F4D3533", biosversion="2.17.1",
        biosreleasedate="11/15/2022", biosvendor="To be filled by O.E.M.",
    )  # fmt: skip
    assert facts_from_salt(answers)["hardware"] == {
        "vendor": "Dell Inc.", "product": "PowerEdge R740", "serial": "7XK2M53",
        "uuid": "4c4c4544-0058-4b10-8032-b7c04f4d3533", "bios_vendor": None,
        "bios_version": "2.17.1", "bios_date": "11/15/2022", "chassis_type": None,
    }  # fmt: skip


def test_os_ids_as_os_release_names_them(answers):
    for salt_os, os_id in [("RedHat", "rhel"), ("Ubuntu", "ubuntu"), ("CentOS Stream", "centos"),
                           ("Amazon", "amzn"), ("Rocky", "rocky")]:  # fmt: skip
        answers["grains.items"]["os"] = salt_os
        assert facts_from_salt(answers)["system"]["os_id"] == os_id


def test_report_has_the_agents_shape_and_rows(answers):
    report = report_from_salt(answers, clock=lambda: 1234.0)
    assert report["version"] == REPORT_VERSION and report["collected_at"] == 1234.0
    assert set(report["facts"]) == {"system", "cpu", "memory", "disks", "network", "hardware"}
    assert report["errors"] == {}
    kinds = sorted((r.kind, r.key) for r in normalize(report["facts"]))
    assert kinds == [("cpu", "cpu"), ("disk", "name:vda"), ("hardware", "hardware"),
                     ("memory", "memory"), ("mount", "/"), ("nic", "mac:02:fc:00:00:00:01"),
                     ("nic", "mac:96:37:20:6f:30:e1"), ("nic", "mac:b6:7b:92:e2:4b:19"),
                     ("system", "system")]  # fmt: skip


def test_report_only_the_plugins_asked(answers):
    report = report_from_salt(answers, plugins={"cpu": "collectors.cpu.CpuCollector"})
    assert list(report["facts"]) == ["cpu"]


def test_a_minion_error_string_instead_of_grains_fails_every_plugin_with_it(answers):
    answers["grains.items"] = "'grains.items' is not available."
    report = report_from_salt(answers)
    assert report["facts"] == {}
    assert "not available" in report["errors"]["system"]["error"]


def test_a_failed_extra_function_leaves_its_fields_unknown(answers):
    answers["disk.usage"] = "ERROR: disk.usage failed"
    mounts = facts_from_salt(answers)["disks"]["mounts"]
    assert mounts[0]["mountpoint"] == "/" and mounts[0]["size_bytes"] is None
