"""How the agent finds the IPv4 address it reports as its identity, without any network traffic."""

from __future__ import annotations

import ipaddress
import os
import socket

import psutil

ENV_VAR = "CMDB_AGENT_IP"
ROUTE_PATH = "/proc/net/route"

E_MALFORMED = "malformed IP address: {value!r}"
E_NO_IP = (
    "could not work out this agent's IP address: no default IPv4 route with an address "
    "was found in {path}; pass --ip ADDRESS or set " + ENV_VAR
)

RTF_UP = 0x0001
RTF_REJECT = 0x0200  # `ip route add unreachable default` shows up as a default route with this


def parse_default_route_interface(proc_net_route_text: str) -> str | None:
    """Return the interface of the usable default route in /proc/net/route text, or None.

    A default route has Destination and Mask 00000000 and the RTF_UP flag; with several, the
    lowest Metric wins (as the kernel picks), and on a tie the first listed.
    """
    lines = proc_net_route_text.splitlines()
    if not lines:
        return None
    header = lines[0].split()
    try:
        col = {n: header.index(n) for n in ("Iface", "Destination", "Flags", "Metric", "Mask")}
    except ValueError:
        return None  # not /proc/net/route text
    candidates = []
    for position, line in enumerate(lines[1:]):
        fields = line.split()
        try:
            iface = fields[col["Iface"]]
            default = int(fields[col["Destination"]], 16) == 0 and int(fields[col["Mask"]], 16) == 0
            flags = int(fields[col["Flags"]], 16)
            metric = int(fields[col["Metric"]])
        except (IndexError, ValueError):
            continue  # a torn or unexpected line must not hide the good ones
        if default and flags & RTF_UP and not flags & RTF_REJECT and iface != "*":
            candidates.append((metric, position, iface))
    return min(candidates)[2] if candidates else None


def default_route_ipv4(route_path: str | os.PathLike = ROUTE_PATH, if_addrs=None) -> str | None:
    """Return the first IPv4 address of the default-route interface, or None if there is none.

    Reads the routing table from a file rather than "connecting" a UDP socket to learn the source
    address: the agent must never send traffic just to find out who it is.
    """
    try:
        with open(route_path, encoding="ascii", errors="replace") as f:
            iface = parse_default_route_interface(f.read())
    except OSError:
        return None  # no /proc (not Linux, or a sandbox): the caller asks the operator instead
    if iface is None:
        return None
    if if_addrs is None:
        if_addrs = psutil.net_if_addrs()
    for addr in if_addrs.get(iface, ()):
        if addr.family == socket.AF_INET:
            return addr.address
    return None


def validate_ipv4(value: str) -> str:
    """Return `value` as a normalised dotted quad, or raise ValueError if it is not exactly one."""
    try:
        if not isinstance(value, str):  # ipaddress would accept an int or bytes
            raise ValueError
        # ipaddress rejects whitespace, short forms ("10.0.3"), octets > 255 and leading zeros.
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(E_MALFORMED.format(value=value)) from None


def resolve_agent_ip(explicit: str | None = None, configured: str | None = None) -> str:
    """Pick the agent's IP: the --ip flag, then $CMDB_AGENT_IP (``configured``, read by
    workers.config), then the default route's address.

    Whichever is used is validated; a malformed value is an error, never a reason to fall through
    to the next source. An empty CMDB_AGENT_IP counts as unset.
    """
    if explicit is not None:
        return _validate_from(explicit, "--ip")
    if configured:
        return _validate_from(configured, ENV_VAR)
    discovered = default_route_ipv4()
    if discovered is None:
        raise RuntimeError(E_NO_IP.format(path=ROUTE_PATH))
    return _validate_from(discovered, f"the default route in {ROUTE_PATH}")


def _validate_from(value: str, source: str) -> str:
    try:
        return validate_ipv4(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (from {source})") from None
