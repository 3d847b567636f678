"""A Salt minion's answers mapped into the collectors' own report (pure: no Salt, no I/O).

Hosts in salt mode run no agent: the salt gateway asks their minion for the functions in
SALT_FUNCTIONS in one call, and `report_from_salt` turns the answers into the report
`collectors.collect()` makes on an agent, so the server stores the same asset rows and
change history whichever way a host was reached. Where Salt does not know a field (CPU
sockets and cores, disk sizes and serials, a NIC's MTU and kind) it is None, as on an agent
whose host does not say either.
"""

from __future__ import annotations

import ipaddress
import time

from collectors import REPORT_VERSION
from collectors.disks import real_filesystems
from collectors.values import clean, clean_uuid, to_int

#: Execution modules asked in one call; each answer is under its name.
SALT_FUNCTIONS = (
    "grains.items",
    "disk.usage",
    "mount.active",
    "network.interfaces",
    "status.meminfo",
    "status.uptime",
)

MIB = 1 << 20
KIB = 1 << 10

#: Salt's `os` grain where it is not the os-release ID the agent reports.
_OS_IDS = {
    "redhat": "rhel",
    "amazon": "amzn",
    "suse": "sles",
    "opensuse": "opensuse-leap",
    "oel": "ol",
    "alinux": "alinux",
    "centos stream": "centos",
}


def _os_id(grains: dict) -> str | None:
    name = (grains.get("os") or "").strip().lower()
    return _OS_IDS.get(name, name.replace(" ", "")) or None


def _system(grains: dict, uptime: dict | None) -> dict:
    full, release, codename = grains.get("osfullname"), grains.get("osrelease"), None
    codename = grains.get("oscodename") or grains.get("lsb_distrib_codename")
    pretty = " ".join(filter(None, [full, str(release) if release else None]))
    if codename and pretty:
        pretty += f" ({codename})"
    uptime = uptime if isinstance(uptime, dict) else {}
    return {
        "hostname": grains.get("host") or grains.get("nodename"),
        "fqdn": grains.get("fqdn"),
        "os_id": _os_id(grains),
        "os_name": full,
        "os_version": str(release) if release is not None else None,
        "os_pretty": pretty or None,
        "kernel": grains.get("kernelrelease"),
        "arch": grains.get("cpuarch"),
        "uptime_s": to_int(uptime.get("seconds")),
        "boot_time": to_int(uptime.get("since_t")),
    }


def _cpu(grains: dict) -> dict:
    # Salt counts logical CPUs only: sockets and cores stay unknown rather than guessed.
    return {
        "model": clean(grains.get("cpu_model")),
        "sockets": None,
        "cores": None,
        "threads": to_int(grains.get("num_cpus")),
        "mhz": None,
    }


def _kib(meminfo: dict, key: str) -> int | None:
    entry = meminfo.get(key)
    value = to_int(entry.get("value")) if isinstance(entry, dict) else None
    return value * KIB if value is not None else None


def _memory(grains: dict, meminfo: dict | None) -> dict:
    meminfo = meminfo if isinstance(meminfo, dict) else {}
    # /proc/meminfo's kB, as the agent reads it; the grains' MiB (rounded down) only without it.
    total = _kib(meminfo, "MemTotal")
    swap = _kib(meminfo, "SwapTotal")
    if total is None and to_int(grains.get("mem_total")) is not None:
        total = to_int(grains.get("mem_total")) * MIB
    if swap is None and to_int(grains.get("swap_total")) is not None:
        swap = to_int(grains.get("swap_total")) * MIB
    return {"total_bytes": total, "swap_bytes": swap, "dimms": []}


def _disks(grains: dict, usage: dict | None, active: dict | None) -> dict:
    ssds = set(grains.get("ssds") or [])
    devices = [
        {"name": name, "kname": name, "model": None, "serial": None, "size_bytes": None,
         "type": "disk", "rotational": name not in ssds, "wwn": None, "parent": None}
        for name in sorted(set(grains.get("disks") or []) | ssds)
    ]  # fmt: skip
    usage = usage if isinstance(usage, dict) else {}
    active = active if isinstance(active, dict) else {}
    mounts = [
        {"mountpoint": point, "device": m.get("device"), "fstype": m.get("fstype")}
        for point, m in active.items()
        if isinstance(m, dict)
    ]
    rows = []
    # The agent's own filter: no pseudo filesystems, no container binds, no kernel trees.
    for mount in real_filesystems(mounts):
        used_kib = usage.get(mount["mountpoint"], {})
        size, used, free = (to_int(used_kib.get(k)) for k in ("1K-blocks", "used", "available"))
        rows.append(
            {
                **mount,
                "size_bytes": size * KIB if size is not None else None,
                "used_bytes": used * KIB if used is not None else None,
                "free_bytes": free * KIB if free is not None else None,
                # as df and the agent compute it: relative to used + what users may still write
                "used_pct": round(100 * used / (used + free), 1)
                if used is not None and free is not None and used + free
                else None,
            }
        )
    return {"devices": devices, "mounts": rows}


def _prefix(netmask: str | None, width: int) -> int:
    if not netmask:
        return width
    try:
        return bin(int(ipaddress.ip_address(netmask))).count("1")
    except ValueError:
        return width


def _network(interfaces: dict | None, grains: dict) -> dict:
    interfaces = interfaces if isinstance(interfaces, dict) else {}
    if not interfaces:  # the grains alone: addresses without their prefixes, so host routes
        v4, v6 = grains.get("ip4_interfaces") or {}, grains.get("ip6_interfaces") or {}
        interfaces = {
            name: {"hwaddr": mac, "inet": [{"address": a} for a in v4.get(name, [])],
                   "inet6": [{"address": a, "prefixlen": "128"} for a in v6.get(name, [])]}
            for name, mac in (grains.get("hwaddr_interfaces") or {}).items()
        }  # fmt: skip
    rows = []
    for name, nic in sorted(interfaces.items()):
        if name == "lo" or not isinstance(nic, dict):
            continue  # as the agent: loopback is no asset
        rows.append(
            {
                "name": name,
                "mac": clean(nic.get("hwaddr")),
                "ipv4": [f"{a['address']}/{_prefix(a.get('netmask'), 32)}"
                         for a in nic.get("inet") or [] if a.get("address")],
                "ipv6": [f"{a['address'].split('%', 1)[0]}/{to_int(a.get('prefixlen')) or 128}"
                         for a in nic.get("inet6") or [] if a.get("address")],
                "speed_mbps": None,
                "mtu": None,
                "up": nic.get("up") if isinstance(nic.get("up"), bool) else None,
                "kind": None,
                "bond": None,
            }
        )  # fmt: skip
    return {"interfaces": rows}


def _hardware(grains: dict) -> dict:
    # Salt reads the same SMBIOS fields (dmidecode or /sys/class/dmi) on bare metal and VMs.
    return {
        "vendor": clean(grains.get("manufacturer")),
        "product": clean(grains.get("productname")),
        "serial": clean(grains.get("serialnumber")),
        "uuid": clean_uuid(grains.get("uuid")),
        "bios_vendor": clean(grains.get("biosvendor")),
        "bios_version": clean(grains.get("biosversion")),
        "bios_date": clean(grains.get("biosreleasedate")),
        "chassis_type": None,
    }


def facts_from_salt(answers: dict) -> dict:
    """{plugin: facts} as the agent's collectors report them, from {function: answer}."""
    grains = answers.get("grains.items")
    if not isinstance(grains, dict):
        raise ValueError(f"grains.items did not answer a mapping: {str(grains)[:200]!r}")
    return {
        "system": _system(grains, answers.get("status.uptime")),
        "cpu": _cpu(grains),
        "memory": _memory(grains, answers.get("status.meminfo")),
        "disks": _disks(grains, answers.get("disk.usage"), answers.get("mount.active")),
        "network": _network(answers.get("network.interfaces"), grains),
        "hardware": _hardware(grains),
    }


def report_from_salt(answers: dict, *, plugins=None, clock=time.time) -> dict:
    """A report of the same shape and version as collectors.collect(), for ``plugins`` (all if
    None). A function that failed on the minion (Salt answers its error as a string) leaves
    its fields unknown; a missing or broken grains.items fails every plugin, with the reason."""
    started = time.perf_counter()
    report: dict = {"version": REPORT_VERSION, "collected_at": clock(), "facts": {},
                    "errors": {}, "durations": {}}  # fmt: skip
    wanted = list(plugins) if plugins else ["system", "cpu", "memory", "disks", "network",
                                             "hardware"]  # fmt: skip
    try:
        facts = facts_from_salt(answers)
    except ValueError as exc:
        for name in wanted:
            report["errors"][name] = {"error": f"ValueError: {exc}", "traceback": ""}
        return report
    for name in wanted:
        if name in facts:
            report["facts"][name] = facts[name]
        else:
            report["errors"][name] = {"error": f"not collected in salt mode: {name}",
                                      "traceback": ""}  # fmt: skip
        report["durations"][name] = round(time.perf_counter() - started, 6)
    return report
