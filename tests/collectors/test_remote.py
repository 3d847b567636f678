"""collectors.remote: its script run by this machine's /bin/sh, parsed into the agent's facts."""

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cmdb.assets.normalize import normalize
from collectors import collect
from collectors.network import parse_ip_addr, parse_ip_json, psutil_links
from collectors.remote import parse, parse_df, report, script, sections
from collectors.source import Source

FIXTURES = Path(__file__).parent / "fixtures"
# Values that move between two collections a second apart: not facts that must agree.
MOVING = {("system", "uptime_s"), ("cpu", "mhz")}


def run_script(nonce: str) -> str:
    done = subprocess.run(
        ["/bin/sh", "-s"], input=script(nonce), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def captured():
    nonce = secrets.token_hex(16)
    return nonce, run_script(nonce)


def test_script_output_parses_into_the_agents_own_facts(captured):
    nonce, output = captured
    remote, local = parse(output, nonce), collect()["facts"]
    assert set(remote) == set(local)
    for plugin, facts in local.items():
        assert set(remote[plugin]) == set(facts), plugin
        for key, value in facts.items():
            if (plugin, key) in MOVING or (plugin, key) == ("disks", "mounts"):
                continue
            assert remote[plugin][key] == value, (plugin, key)
    # Mounts: the same filesystems with the same sizes; used and free move with every write.
    fields = ("mountpoint", "device", "fstype", "size_bytes")
    assert [{f: m[f] for f in fields} for m in remote["disks"]["mounts"]] == [
        {f: m[f] for f in fields} for m in local["disks"]["mounts"]
    ]
    assert remote["system"]["hostname"] and remote["cpu"]["threads"]
    assert remote["memory"]["total_bytes"] > 0 and remote["network"]["interfaces"]


def test_script_output_gives_the_agents_asset_rows(captured):
    nonce, output = captured
    rows = {(r.kind, r.key): r.data for r in normalize(parse(output, nonce))}
    assert rows == {(r.kind, r.key): r.data for r in normalize(collect()["facts"])}
    assert ("cpu", "cpu") in rows and ("system", "system") in rows


# Applets a busybox-only host runs instead of GNU's (lsblk is not one: util-linux's is used).
BUSYBOX_APPLETS = ("sh", "cat", "awk", "uname", "hostname", "df", "ip", "id", "timeout")


@pytest.mark.parametrize("shell", ["dash", "bash --posix", "busybox"])
def test_other_shells_and_busybox_tools_give_the_same_asset_rows(shell, tmp_path):
    if shutil.which(shell.split()[0]) is None:
        pytest.fail(f"{shell.split()[0]} is missing: deploy/testdeps.sh installs it")
    env = None
    argv = [*shell.split(), "-s"]
    if shell == "busybox":
        for applet in BUSYBOX_APPLETS:
            (tmp_path / applet).symlink_to(shutil.which("busybox"))
        argv = [shutil.which("busybox"), "sh", "-s"]
        env = {"PATH": str(tmp_path)}  # busybox's df (no -B1) and ip (no -json) come first
    nonce = secrets.token_hex(16)
    done = subprocess.run(
        argv, input=script(nonce), capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    if shell == "busybox":
        assert sections(done.stdout, nonce)[("c", "ip-json")][1] != 0  # the text path was taken
    rows = {(r.kind, r.key): r.data for r in normalize(parse(done.stdout, nonce))}
    assert rows == {(r.kind, r.key): r.data for r in normalize(collect()["facts"])}


def test_report_has_the_shape_of_collect(captured):
    nonce, output = captured
    got = report(output, nonce, clock=lambda: 1000.0)
    assert set(got) == {"version", "collected_at", "facts", "errors", "durations"}
    assert got["errors"] == {} and got["collected_at"] == 1000.0


def test_sections_are_exact_bytes_of_the_files(captured):
    nonce, output = captured
    found = sections(output, nonce)
    with open("/proc/meminfo") as f:
        assert found[("f", "/proc/meminfo")][0].splitlines()[0] == f.read().splitlines()[0]
    with open("/etc/os-release") as f:
        assert found[("f", "/etc/os-release")] == (f.read(), 0)
    assert found[("c", "uname-m")] == (subprocess.check_output(["uname", "-m"], text=True), 0)


def test_a_file_cannot_fake_a_section_without_the_nonce(captured):
    nonce, output = captured
    other = secrets.token_hex(16)
    # A mount point, an interface alias or a DMI string that prints marker-like lines.
    forged = f"@@{other} f /etc/os-release\nID=evil\n@@{other} e 0\n@@ f /proc/cpuinfo\nx\n@@ e 0\n"
    planted = output.replace(
        f"@@{nonce} f /proc/mounts\n", f"@@{nonce} f /proc/mounts\n{forged}", 1
    )
    assert planted != output
    facts = parse(planted, nonce)
    assert facts["system"]["os_id"] == parse(output, nonce)["system"]["os_id"] != "evil"
    assert sections(planted, nonce)[("f", "/proc/mounts")][0].startswith(forged)


def test_output_cut_short_drops_the_unfinished_section(captured):
    nonce, output = captured
    cut = output[: output.index(f"@@{nonce} f /proc/meminfo\n") + 60]
    found = sections(cut, nonce)
    assert ("f", "/proc/meminfo") not in found and ("f", "/proc/cpuinfo") in found
    assert parse(cut, nonce)["memory"]["total_bytes"] is None


def test_banner_before_and_after_is_ignored(captured):
    nonce, output = captured
    assert parse(f"Welcome to web01\n{output}bye\n", nonce) == parse(output, nonce)


@pytest.mark.parametrize("nonce", ["", "short", "x" * 200, "abc'; rm -rf / #0123456789"])
def test_script_refuses_a_nonce_that_is_not_plain_and_long(nonce):
    with pytest.raises(ValueError):
        script(nonce)
    with pytest.raises(ValueError):
        sections("", nonce)


def test_iproute2_json_and_text_say_what_psutil_says_on_this_host():
    source = Source()
    expected = psutil_links(source.net_if_addrs(), source.net_if_stats())
    for parsed in (
        parse_ip_json(source.run(["ip", "-json", "addr", "show"])),
        parse_ip_addr(source.run(["ip", "addr", "show"])),
    ):
        assert set(parsed) == set(expected)
        for name, link in parsed.items():
            assert link == {k: v for k, v in expected[name].items() if k != "speed_mbps"}, name


def test_df_in_bytes_and_in_kibibytes():
    bytes_ = parse_df(
        "Filesystem 1-blocks Used Available Capacity Mounted on\n"
        "/dev/vda 270553174016 24535240704 84409053184 23% /\n"
        "/dev/sdc 1000 100 800 12% /srv/backup copies\n"
    )
    assert vars(bytes_["/"]) == {
        "f_frsize": 1,
        "f_blocks": 270553174016,
        "f_bfree": 270553174016 - 24535240704,
        "f_bavail": 84409053184,
    }
    assert bytes_["/srv/backup copies"].f_blocks == 1000
    kib = parse_df(
        "Filesystem     1024-blocks    Used Available Capacity Mounted on\n"
        "/dev/sda1        20961280 1894916  19066364      10% /\n"
    )
    assert kib["/"].f_frsize == 1024 and kib["/"].f_bavail == 19066364


def test_an_old_host_without_json_tools_through_the_script(tmp_path):
    """lsblk 2.23 and iproute 3.10 refuse --json; dmidecode 2.11 runs as root.

    Each is a stand-in on PATH that prints a real capture of that tool (fixtures/README.md) and
    fails on the options the old version lacks, as the old versions do.
    """
    tools = {
        "lsblk": ("--json", FIXTURES / "lsblk" / "multi-devs-bcachefs.pairs"),
        "ip": ("-json", FIXTURES / "ip_addr" / "rex-ip.out_centos7_alias"),
        "dmidecode": ("--json-never", FIXTURES / "dmidecode" / "rex-dmidecode-2.11-parallels.txt"),
    }
    for name, (refused, capture) in tools.items():
        stub = tmp_path / name
        stub.write_text(
            "#!/bin/sh\n"
            f'for a in "$@"; do [ "$a" = {refused} ] && {{ echo "no $a" >&2; exit 1; }}; done\n'
            f"cat {capture}\n"
        )
        stub.chmod(0o755)
    nonce = secrets.token_hex(16)
    done = subprocess.run(
        ["/bin/sh", "-s"],
        input=script(nonce),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    found = sections(done.stdout, nonce)
    assert found[("c", "lsblk-json")][1] != 0 and found[("c", "ip-json")][1] != 0
    facts = parse(done.stdout, nonce)
    kinds = {d["kname"]: d["type"] for d in facts["disks"]["devices"]}
    assert kinds["sda"] == "disk" and kinds["sr0"] == "rom" and len(kinds) == 17
    nics = {n["name"]: n for n in facts["network"]["interfaces"]}
    assert nics["eth0"]["mac"] == "52:54:00:f4:0d:74" and nics["eth0:1"]["ipv4"] == ["1.2.3.4/32"]
    if os.getuid() == 0:  # the script asks dmidecode only as root
        assert [d["locator"] for d in facts["memory"]["dimms"]] == ["DIMM #0"]


# Links made in a fresh network namespace: a veth pair up but without carrier (its peer down),
# a second address, a labelled alias, a point-to-point peer, IPv6 and a jumbo MTU.
NAMESPACE_SETUP = """
mount -t sysfs sysfs /sys  # the namespace's own /sys/class/net (a mount namespace of its own)
ip link set lo up
ip link add v0 type veth peer name v1
ip link set v0 mtu 9000 up
ip addr add 10.9.9.1/24 dev v0
ip addr add 10.9.9.7/24 dev v0
ip addr add 10.9.8.1/24 dev v0 label v0:1
ip addr add 10.9.7.1 peer 10.9.7.2/32 dev v0
ip addr add fd00:9::1/64 dev v0 nodad
ip link add v2 type veth peer name v3
ip link set v2 up
ip link set v3 up
"""
# Run inside it: every way of reading the links, and the asset rows both collections give.
NAMESPACE_PROBE = """
import json, secrets, subprocess
from cmdb.assets.normalize import normalize
from collectors import collect, remote
from collectors.network import IP_JSON, IP_TEXT, parse_ip_addr, parse_ip_json, psutil_links
from collectors.source import Source
source = Source()
nonce = secrets.token_hex(16)
out = subprocess.run(["/bin/sh", "-s"], input=remote.script(nonce), capture_output=True,
                     text=True).stdout
rows = lambda facts: sorted([r.kind, r.key, r.data] for r in normalize(facts) if r.kind == "nic")
print(json.dumps({
    "psutil": psutil_links(source.net_if_addrs(), source.net_if_stats()),
    "json": parse_ip_json(source.run(IP_JSON)),
    "text": parse_ip_addr(source.run(IP_TEXT)),
    "agent": rows(collect()["facts"]),
    "remote": rows(remote.parse(out, nonce)),
}))
"""


def test_links_of_a_network_namespace_read_the_same_by_psutil_json_text_and_script():
    if shutil.which("unshare") is None or os.getuid() != 0:
        pytest.skip("needs root and unshare(1) for a network namespace of its own")
    done = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-ec", f'{NAMESPACE_SETUP}\nexec "$0" -c "$1"',
         sys.executable, NAMESPACE_PROBE],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    expected = seen["psutil"]
    for way in ("json", "text"):
        assert seen[way] == {
            # The parsers leave speed to sysfs, except for an alias, which has no sysfs entry.
            name: {k: v for k, v in link.items() if k != "speed_mbps" or name == "v0:1"}
            for name, link in expected.items()
        }, way
    v0 = expected["v0"]
    assert v0["ipv4"] == ["10.9.9.1/24", "10.9.7.1/32", "10.9.9.7/24"] and v0["mtu"] == 9000
    assert v0["up"] is False  # UP, but NO-CARRIER: psutil's isup is IFF_RUNNING
    assert expected["v2"]["up"] is True and expected["v0:1"]["ipv4"] == ["10.9.8.1/24"]
    assert seen["remote"] == seen["agent"]
    nics = {key: data for _kind, key, data in seen["agent"]}
    assert nics[f"mac:{expected['v2']['mac']}"]["speed_mbps"] == 10000  # veth's, read both ways
    assert nics[f"mac:{expected['v0']['mac']}"]["speed_mbps"] is None  # no carrier, no speed
