"""From a collectors report to asset rows and a host summary (pure: no Django, no I/O).

Each row has a kind, a stable key and ``data`` (what change history compares) plus ``metrics``
(current values that move all the time, such as free space: kept, never diffed).
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AssetRow:
    kind: str
    key: str
    data: dict
    metrics: dict = field(default_factory=dict)


SYSTEM_FIELDS = ("hostname", "fqdn", "os_id", "os_name", "os_version", "os_pretty", "kernel",
                 "arch", "boot_time")  # fmt: skip
# mhz moves with frequency scaling: a fact, not a change.
CPU_FIELDS = ("model", "sockets", "cores", "threads")
DISK_FIELDS = ("name", "model", "serial", "size_bytes", "type", "rotational", "wwn", "parent")
MOUNT_FIELDS = ("device", "fstype", "size_bytes")
MOUNT_METRICS = ("used_bytes", "free_bytes", "used_pct")
NIC_FIELDS = ("name", "mac", "ipv4", "ipv6", "speed_mbps", "mtu", "up", "kind", "bond")


#: Asset kinds each collector plugin reports.
PLUGIN_KINDS = {
    "system": {"system"},
    "cpu": {"cpu"},
    "memory": {"memory", "dimm"},
    "disks": {"disk", "mount"},
    "network": {"nic"},
    "hardware": {"hardware"},
}


def reported_kinds(facts: dict) -> set[str]:
    return set().union(*(PLUGIN_KINDS.get(name, set()) for name in facts))


def _pick(source: dict | None, names) -> dict:
    source = source or {}
    return {name: source.get(name) for name in names}


def _disk_key(disk: dict) -> str:
    # The serial survives renaming (sdb -> sdc after a reboot); the name is all a VM disk has.
    return f"serial:{disk['serial']}" if disk.get("serial") else f"name:{disk.get('name')}"


def _nic_key(nic: dict) -> str:
    return f"mac:{nic['mac'].lower()}" if nic.get("mac") else f"name:{nic.get('name')}"


def normalize(facts: dict) -> list[AssetRow]:
    """Rows for every subject present in ``facts`` (a report's "facts" mapping)."""
    rows: list[AssetRow] = []
    if "system" in facts:
        rows.append(AssetRow("system", "system", _pick(facts["system"], SYSTEM_FIELDS)))
    if "cpu" in facts:
        cpu = facts["cpu"] or {}
        rows.append(AssetRow("cpu", "cpu", _pick(cpu, CPU_FIELDS), {"mhz": cpu.get("mhz")}))
    if "memory" in facts:
        memory = facts["memory"] or {}
        rows.append(AssetRow("memory", "memory", _pick(memory, ("total_bytes", "swap_bytes"))))
        for dimm in memory.get("dimms") or []:
            key = (
                f"serial:{dimm['serial']}" if dimm.get("serial") else f"slot:{dimm.get('locator')}"
            )
            rows.append(AssetRow("dimm", key, dict(dimm)))
    if "disks" in facts:
        disks = facts["disks"] or {}
        for disk in disks.get("devices") or []:
            rows.append(AssetRow("disk", _disk_key(disk), _pick(disk, DISK_FIELDS)))
        for mount in disks.get("mounts") or []:
            rows.append(
                AssetRow(
                    "mount",
                    mount.get("mountpoint") or "?",
                    _pick(mount, MOUNT_FIELDS),
                    _pick(mount, MOUNT_METRICS),
                )
            )
    if "network" in facts:
        for nic in (facts["network"] or {}).get("interfaces") or []:
            rows.append(AssetRow("nic", _nic_key(nic), _pick(nic, NIC_FIELDS)))
    if "hardware" in facts:
        rows.append(AssetRow("hardware", "hardware", dict(facts["hardware"] or {})))
    # Two rows with one key (a NIC listed twice) would make the diff flap: last one wins.
    return list({(r.kind, r.key): r for r in rows}.values())


def summary(facts: dict) -> dict:
    """The flat host facts that --where filters on (see cmdb.assets.where)."""
    system = facts.get("system") or {}
    cpu = facts.get("cpu") or {}
    memory = facts.get("memory") or {}
    hardware = facts.get("hardware") or {}
    mounts = (facts.get("disks") or {}).get("mounts") or []
    free = [
        100.0 * m["free_bytes"] / m["size_bytes"]
        for m in mounts
        if m.get("size_bytes") and m.get("free_bytes") is not None
    ]
    return {
        "os": system.get("os_id") or "",
        "os_version": system.get("os_version") or "",
        "kernel": system.get("kernel") or "",
        "arch": system.get("arch") or "",
        "fqdn": system.get("fqdn") or "",
        "cpu_model": cpu.get("model") or "",
        "cpu_threads": cpu.get("threads"),
        "memory_bytes": memory.get("total_bytes"),
        "vendor": hardware.get("vendor") or "",
        "product": hardware.get("product") or "",
        "serial": hardware.get("serial") or "",
        # The fullest filesystem decides: "disk_free_pct<10" finds hosts with any mount low.
        "disk_free_pct": round(min(free), 2) if free else None,
    }
