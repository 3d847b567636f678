"""Host tasks with the same state, exit code and output as one group ("3 hosts: 127.0.1.1-3"),
the odd ones first: what a job of hundreds of hosts is read as."""

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from client.text import row_ip, row_output

#: Host task states in the order they are tallied (the server's HostTaskStateChoices); a
#: state this client does not know comes after them.
STATES = ("pending", "running", "storing", "ok", "failed", "timeout", "cancelled",
          "unreachable", "lost", "error")  # fmt: skip
#: Where a host's own address stands in its error or output once grouped.
HOST_MARK = "<host>"


def ip_order(ip: str) -> tuple:
    """Sort key for addresses in numeric order (127.0.2.2 before 127.0.2.10, not as text):
    IPv4, then IPv6, then names."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (9, 0, ip)
    return (address.version, int(address), "")


def state_order(state: str) -> tuple:
    return (STATES.index(state), "") if state in STATES else (len(STATES), state)


def ip_ranges(ips: Iterable[str]) -> str:
    """ "127.0.1.1-3, 127.0.1.7, 127.0.2.1": IPv4 addresses whose last octets follow one
    another in the same /24 collapse into a range; others are listed as they are."""
    parts: list[str] = []
    run: list[int] = []  # the current range: its addresses as integers

    def close():
        if run:
            first = str(ipaddress.IPv4Address(run[0]))
            parts.append(first if len(run) == 1 else f"{first}-{run[-1] & 0xFF}")
            run.clear()

    for ip in sorted(set(ips), key=ip_order):
        key = ip_order(ip)
        if key[0] != 4:
            close()
            parts.append(ip)
        elif run and key[1] == run[-1] + 1 and key[1] >> 8 == run[0] >> 8:
            run.append(key[1])
        else:
            close()
            run.append(key[1])
    close()
    return ", ".join(parts)


class Group(NamedTuple):
    """Hosts whose tasks ended alike: ``output`` is what is printed under them (the error,
    stdout, stderr), with each host's own address as <host> when there are several. A
    NamedTuple, not a dataclass: dataclasses (and the inspect it imports) were a tenth of
    `cmdb`'s start-up."""

    state: str
    exit_code: int | None
    output: str
    hosts: tuple[str, ...]

    @property
    def label(self) -> str:
        n = len(self.hosts)
        return f"{n} host{'' if n == 1 else 's'}: {ip_ranges(self.hosts)}"


def _without_own_address(text: str, ip: str) -> str:
    # 127.0.1.1 must not match inside 127.0.1.10 nor 10.127.0.1.1; a full stop after it may.
    if not ip or ip not in text:
        return text
    pattern = rf"(?<![\w.:]){re.escape(ip)}(?![\w:]|\.\w)"
    return re.sub(pattern, HOST_MARK, text)


def group(rows: Iterable[Mapping]) -> list[Group]:
    """Rows (the API's host task documents, or dicts of the same keys: ip or host, state,
    exit_code, stdout, stderr, error; a missing one is empty) grouped by state, exit code and
    output; the groups of fewest hosts first (the odd ones), then by state and first host."""
    found: dict[tuple, list[tuple[str, str]]] = {}
    for row in rows:
        ip, text = row_ip(row), row_output(row)
        key = (row.get("state") or "", row.get("exit_code"), _without_own_address(text, ip))
        found.setdefault(key, []).append((ip, text))
    groups = []
    for (state, exit_code, shared), members in found.items():
        members.sort(key=lambda m: ip_order(m[0]))
        # One host: its own words, address and all.
        output = members[0][1] if len(members) == 1 else shared
        groups.append(Group(state, exit_code, output, tuple(ip for ip, _ in members)))
    groups.sort(key=lambda g: (len(g.hosts), state_order(g.state), ip_order(g.hosts[0])))
    return groups


def counts_of(rows: Iterable[Mapping]) -> dict[str, int]:
    return dict(Counter(row.get("state") or "" for row in rows))


def summary_line(counts: Mapping[str, int]) -> str:
    """Host tasks per state, as "9800 ok, 200 failed", in the states' order; "no hosts"."""
    order = sorted((s for s, n in counts.items() if n), key=state_order)
    return ", ".join(f"{counts[s]} {s}" for s in order) or "no hosts"
