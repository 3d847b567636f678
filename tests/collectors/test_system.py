"""Tests for collectors.system on os-release files of several distributions and this host's."""

from pathlib import Path

import pytest

from collectors.system import SystemCollector, choose_fqdn, parse_os_release, parse_uptime

DATA = Path(__file__).parent / "data" / "system"


def os_release(name: str) -> str:
    return (DATA / f"os-release_{name}").read_text()


@pytest.mark.parametrize(
    ("name", "os_id", "os_name", "version", "pretty"),
    [
        (
            "debian12_this_host",
            "debian",
            "Debian GNU/Linux",
            "12",
            "Debian GNU/Linux 12 (bookworm)",
        ),
        ("ubuntu2204", "ubuntu", "Ubuntu", "22.04", "Ubuntu 22.04.4 LTS"),
        ("centos7", "centos", "CentOS Linux", "7", "CentOS Linux 7 (Core)"),
        ("rhel9", "rhel", "Red Hat Enterprise Linux", "9.3", "Red Hat Enterprise Linux 9.3 (Plow)"),
        ("alpine319", "alpine", "Alpine Linux", "3.19.1", "Alpine Linux v3.19"),
        ("arch", "arch", "Arch Linux", None, "Arch Linux"),
    ],
)
def test_parse_os_release_on_captured_files(name, os_id, os_name, version, pretty):
    fields = parse_os_release(os_release(name))
    assert fields["ID"] == os_id
    assert fields["NAME"] == os_name
    assert fields.get("VERSION_ID") == version
    assert fields["PRETTY_NAME"] == pretty


def test_os_release_quoting_is_undone_as_a_shell_would():
    text = (
        "# a comment\n"
        "NAME='Single Quoted'\n"
        'VERSION="1.0 \\"beta\\""\n'
        "ID=plain\n"
        "not a pair\n"
        'BROKEN="unterminated\n'
        "1BAD=x\n"
    )
    assert parse_os_release(text) == {
        "NAME": "Single Quoted",
        "VERSION": '1.0 "beta"',
        "ID": "plain",
        "BROKEN": "unterminated",
    }


def test_parse_uptime_on_this_hosts_proc_uptime():
    assert parse_uptime((DATA / "proc_uptime_this_host").read_text()) == 4691.48
    assert parse_uptime("") is None
    assert parse_uptime("garbage") is None


@pytest.mark.parametrize(
    ("hostname", "canonical", "fqdn"),
    [
        ("web01", "web01.dc1.example.net", "web01.dc1.example.net"),
        ("web01", None, "web01"),  # no resolver answer: as `hostname -f`, the short name
        ("web01", "localhost", "web01"),  # /etc/hosts maps the name to 127.0.0.1 after localhost
        ("web01", "localhost.localdomain", "web01"),
        ("localhost", "localhost", "localhost"),
        (None, None, None),
    ],
)
def test_fqdn_ignores_a_loopback_canonical_name(hostname, canonical, fqdn):
    assert choose_fqdn(hostname, canonical) == fqdn


def test_system_collector_on_a_centos7_host(fake_source):
    source = fake_source(
        files={
            "/etc/os-release": os_release("centos7"),
            "/proc/uptime": "86400.52 170000.10\n",
        },
        hostname="db02",
        fqdn="db02.dc1.example.net",
        boot_time=1700000000.0,
    )

    assert SystemCollector(source, clock=lambda: 0.0).collect() == {
        "hostname": "db02",
        "fqdn": "db02.dc1.example.net",
        "os_id": "centos",
        "os_name": "CentOS Linux",
        "os_version": "7",
        "os_pretty": "CentOS Linux 7 (Core)",
        "kernel": "5.15.0-105-generic",
        "arch": "x86_64",
        "uptime_s": 86400,
        "boot_time": 1700000000,
    }


def test_os_release_falls_back_to_usr_lib(fake_source):
    source = fake_source(files={"/usr/lib/os-release": os_release("alpine319")})
    assert SystemCollector(source).collect()["os_id"] == "alpine"


def test_without_os_release_the_os_facts_are_none(fake_source):
    facts = SystemCollector(fake_source()).collect()
    assert facts["os_id"] is facts["os_name"] is facts["os_version"] is facts["os_pretty"] is None
    assert facts["hostname"] == "web01"


def test_boot_time_is_derived_from_uptime_when_psutil_cannot_tell(fake_source):
    source = fake_source(files={"/proc/uptime": "100.9 50.0\n"})
    facts = SystemCollector(source, clock=lambda: 1000.5).collect()
    assert facts["uptime_s"] == 100
    assert facts["boot_time"] == 899
