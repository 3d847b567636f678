"""Tests for workers.identity, on /proc/net/route files captured from real kinds of hosts."""

import socket
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from workers import identity
from workers.config import AgentSettings
from workers.identity import (
    default_route_ipv4,
    parse_default_route_interface,
    resolve_agent_ip,
    validate_ipv4,
)

DATA = Path(__file__).parent / "data"

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"


def route_file(name: str) -> str:
    return (DATA / f"proc_net_route_{name}.txt").read_text()


def addrs(**interfaces):
    """A psutil.net_if_addrs()-shaped dict: name -> list of entries with .family/.address."""
    return {
        name: [SimpleNamespace(family=family, address=address) for family, address in entries]
        for name, entries in interfaces.items()
    }


BOND0_ADDRS = addrs(
    bond0=[
        (psutil.AF_LINK, "3c:ec:ef:12:34:56"),
        (socket.AF_INET6, "fe80::3eec:efff:fe12:3456%bond0"),
        (socket.AF_INET, "10.0.20.17"),
        (socket.AF_INET, "10.0.20.99"),  # a secondary address: the first one is the identity
    ],
    bond1=[(socket.AF_INET, "10.0.30.17")],
    docker0=[(socket.AF_INET, "172.17.0.1")],
)


# --- parse_default_route_interface -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "interface"),
    [
        ("this_host", "eth0"),
        ("container_no_default", None),
        ("two_defaults", "enp0s31f6"),
        ("bond0", "bond0"),
    ],
)
def test_parse_default_route_interface_on_captured_files(name, interface):
    assert parse_default_route_interface(route_file(name)) == interface


def test_lowest_metric_wins_whatever_the_order():
    lines = route_file("two_defaults").splitlines()
    reordered = "\n".join([lines[0], *reversed(lines[1:])])
    assert parse_default_route_interface(reordered) == "enp0s31f6"


def test_equal_metrics_pick_the_first_listed():
    text = "\n".join(
        [
            HEADER,
            "eth1\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0",
            "eth0\t00000000\t01000A0A\t0003\t0\t0\t100\t00000000\t0\t0\t0",
        ]
    )
    assert parse_default_route_interface(text) == "eth1"


def test_default_route_that_is_not_up_is_ignored():
    text = "\n".join(
        [
            HEADER,
            "eth0\t00000000\t01000A0A\t0002\t0\t0\t0\t00000000\t0\t0\t0",  # RTF_GATEWAY only
            "eth1\t00000000\t0101A8C0\t0003\t0\t0\t500\t00000000\t0\t0\t0",
        ]
    )
    assert parse_default_route_interface(text) == "eth1"


def test_unreachable_default_route_is_ignored():
    # `ip route add unreachable default metric 4278198272` as some VPN kill switches install it.
    text = "\n".join([HEADER, "*\t00000000\t00000000\t0201\t0\t0\t4278198272\t00000000\t0\t0\t0"])
    assert parse_default_route_interface(text) is None


def test_route_to_zero_destination_with_a_mask_is_not_default():
    # 0.0.0.0/1, as OpenVPN's def1 installs it, is not the default route.
    text = "\n".join([HEADER, "tun0\t00000000\t0100080A\t0003\t0\t0\t0\t00000080\t0\t0\t0"])
    assert parse_default_route_interface(text) is None


@pytest.mark.parametrize(
    "text", ["", "\n", "garbage\n", HEADER + "\n", "Iface\tFlags\neth0\t0003\n"]
)
def test_empty_or_unexpected_text_gives_none(text):
    assert parse_default_route_interface(text) is None


def test_torn_lines_are_skipped_not_fatal():
    good = "bond0\t00000000\t0114000A\t0003\t0\t0\t0\t00000000\t0\t0\t0"
    text = "\n".join([HEADER, "eth0\t0000", "eth1\tZZZZZZZZ\t0\t0003\t0\t0\t0\t00000000", good])
    assert parse_default_route_interface(text) == "bond0"


# --- default_route_ipv4 --------------------------------------------------------------------------


def test_default_route_ipv4_returns_first_ipv4_of_the_bond():
    assert default_route_ipv4(DATA / "proc_net_route_bond0.txt", if_addrs=BOND0_ADDRS) == (
        "10.0.20.17"
    )


def test_default_route_ipv4_none_without_default_route():
    path = DATA / "proc_net_route_container_no_default.txt"
    assert default_route_ipv4(path, if_addrs=addrs(eth0=[(socket.AF_INET, "172.18.0.5")])) is None


def test_default_route_ipv4_none_when_interface_has_no_ipv4():
    only_v6 = addrs(bond0=[(socket.AF_INET6, "2001:db8::17")])
    assert default_route_ipv4(DATA / "proc_net_route_bond0.txt", if_addrs=only_v6) is None


def test_default_route_ipv4_none_when_interface_is_missing():
    assert default_route_ipv4(DATA / "proc_net_route_bond0.txt", if_addrs={}) is None


def test_default_route_ipv4_none_when_route_file_is_missing(tmp_path):
    assert default_route_ipv4(tmp_path / "absent", if_addrs=BOND0_ADDRS) is None


def test_default_route_ipv4_on_this_machine_matches_psutil():
    try:
        iface = parse_default_route_interface(Path("/proc/net/route").read_text())
    except OSError:
        pytest.skip("no /proc/net/route here")
    ipv4 = [a.address for a in psutil.net_if_addrs().get(iface, []) if a.family == socket.AF_INET]
    if not ipv4:
        pytest.skip("this machine has no default route with an IPv4 address")
    assert default_route_ipv4() == ipv4[0]


# --- validate_ipv4 -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["10.0.3.7", "127.0.1.1", "0.0.0.0", "255.255.255.255"])
def test_validate_ipv4_accepts_dotted_quads(value):
    assert validate_ipv4(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "10.0.3",
        "999.1.1.1",
        "",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.4\n",
        "1.2.3.4.5",
        "1.2.3.-4",
        "010.0.0.1",  # leading zero: octal to some tools, decimal to others
        "0x7f.0.0.1",
        "1.2.3.4/24",
        "::1",
        "localhost",
        "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits: str.isdigit() says yes
    ],
)
def test_validate_ipv4_rejects_malformed(value):
    with pytest.raises(ValueError) as excinfo:
        validate_ipv4(value)
    assert str(excinfo.value) == f"malformed IP address: {value!r}"


@pytest.mark.parametrize("value", [None, 167772161, b"10.0.0.1"])
def test_validate_ipv4_rejects_non_strings(value):
    with pytest.raises(ValueError, match="malformed IP address"):
        validate_ipv4(value)


# --- resolve_agent_ip ---------------------------------------------------------------------------


@pytest.fixture
def discovered(monkeypatch):
    """Replace route discovery; the value set is what the 'default route' yields."""
    box = {"ip": "10.0.20.17"}
    monkeypatch.setattr(identity, "default_route_ipv4", lambda: box["ip"])
    return box


def resolve(explicit=None, environ=None):
    """As the agent resolves it: $CMDB_AGENT_IP through its settings (workers.config)."""
    return resolve_agent_ip(explicit, AgentSettings.from_environ(environ or {}).ip)


def test_explicit_flag_wins_over_environment_and_route(discovered):
    assert resolve("192.0.2.10", environ={"CMDB_AGENT_IP": "192.0.2.20"}) == "192.0.2.10"


def test_environment_wins_over_route(discovered):
    assert resolve(None, environ={"CMDB_AGENT_IP": "192.0.2.20"}) == "192.0.2.20"


def test_route_is_the_last_resort(discovered):
    assert resolve(None, environ={}) == "10.0.20.17"


def test_empty_environment_variable_counts_as_unset(discovered):
    assert resolve(None, environ={"CMDB_AGENT_IP": ""}) == "10.0.20.17"


def test_malformed_explicit_value_is_an_error_not_a_fallthrough(discovered):
    with pytest.raises(ValueError, match=r"malformed IP address: '10\.0\.3' \(from --ip\)"):
        resolve("10.0.3", environ={"CMDB_AGENT_IP": "192.0.2.20"})
    with pytest.raises(ValueError, match="malformed IP address: ''"):
        resolve("", environ={})


def test_malformed_environment_value_names_the_variable(discovered):
    with pytest.raises(ValueError, match=r"malformed IP address: ' 1\.2\.3\.4' \(from CMDB_AGENT"):
        resolve(None, environ={"CMDB_AGENT_IP": " 1.2.3.4"})


def test_no_ip_anywhere_tells_the_operator_what_to_do(discovered):
    discovered["ip"] = None
    with pytest.raises(RuntimeError) as excinfo:
        resolve(None, environ={})
    message = str(excinfo.value)
    assert "--ip" in message and "CMDB_AGENT_IP" in message and "/proc/net/route" in message


def test_the_agents_settings_read_os_environ_by_default(discovered, monkeypatch):
    monkeypatch.setenv("CMDB_AGENT_IP", "192.0.2.30")
    assert resolve_agent_ip(None, AgentSettings.from_environ().ip) == "192.0.2.30"


def test_identity_never_opens_a_socket(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("identity must not open sockets")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert default_route_ipv4(DATA / "proc_net_route_bond0.txt", if_addrs=BOND0_ADDRS)
    default_route_ipv4()  # the real psutil path too
