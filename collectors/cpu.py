"""Processors: model, sockets, physical cores, logical threads and clock speed."""

from __future__ import annotations

from collections.abc import Iterable

from collectors.base import Collector

CPUINFO_PATH = "/proc/cpuinfo"
ONLINE_PATH = "/sys/devices/system/cpu/online"
TOPOLOGY_PATH = "/sys/devices/system/cpu/cpu{n}/topology/{name}"

# arm64 /proc/cpuinfo has no "model name", only JEDEC-style implementer and part numbers; these
# are the names lscpu gives them, for the cores found in servers and boards we are likely to meet.
ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x43": "Cavium",
    "0x46": "Fujitsu",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x50": "APM",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}
ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd46"): "Cortex-A510",
    ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x41", "0xd84"): "Neoverse-V3",
    ("0x41", "0xd8e"): "Neoverse-N3",
    ("0x43", "0x0a1"): "ThunderX 88XX",
    ("0x43", "0x0af"): "ThunderX2 99xx",
    ("0x46", "0x001"): "A64FX",
    ("0x48", "0xd01"): "Kunpeng-920",
    ("0x50", "0x000"): "X-Gene",
    ("0xc0", "0xac3"): "Ampere-1",
    ("0xc0", "0xac4"): "Ampere-1a",
}


def parse_cpuinfo(text: str) -> dict:
    """model, sockets, cores, threads and mhz from /proc/cpuinfo; None for what it does not say.

    Sockets and cores come from distinct "physical id" and ("physical id", "core id") values, so
    hyperthreads and gaps in core numbering do not skew them. Where those lines are missing (ARM,
    some hypervisors) both are None and the caller asks sysfs instead.
    """
    processors = [block for block in _blocks(text) if "processor" in block]
    if not processors:
        return {"model": None, "sockets": None, "cores": None, "threads": None, "mhz": None}
    first = processors[0]
    sockets, cores = count_topology(
        (block.get("physical id"), block.get("core id")) for block in processors
    )
    if sockets is not None and cores is None and first.get("cpu cores", "").isdigit():
        cores = sockets * int(first["cpu cores"])  # core ids hidden, per-socket count given
    speeds = [_float(block.get("cpu MHz")) for block in processors]
    speeds = [speed for speed in speeds if speed]
    return {
        "model": _model(first),
        "sockets": sockets,
        "cores": cores,
        "threads": len(processors),
        # The highest, not the first: with frequency scaling idle cores report their floor.
        "mhz": max(speeds) if speeds else None,
    }


def _blocks(text: str) -> list[dict[str, str]]:
    """One dict per blank-line separated block of "key<tabs>: value" lines."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current.setdefault(key.strip(), value.strip())
    if current:
        blocks.append(current)
    return blocks


def _model(block: dict[str, str]) -> str | None:
    if block.get("model name"):
        return " ".join(block["model name"].split())  # some Xeons pad with runs of spaces
    implementer = block.get("CPU implementer", "").lower()
    part = block.get("CPU part", "").lower()
    if implementer and part:
        vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer}")
        return f"{vendor} {ARM_PARTS.get((implementer, part), f'part {part}')}"
    return block.get("cpu") or None  # POWER: "cpu : POWER9 (architected), altivec supported"


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def count_topology(pairs: Iterable[tuple[str | None, str | None]]) -> tuple[int | None, ...]:
    """(sockets, cores) from one (package id, core id) pair per logical CPU.

    Unknown (None) as soon as one CPU lacks its package id, since a partial count would be
    wrong rather than merely incomplete. Sysfs says -1 for "no package" on some ARM kernels.
    """
    packages, cores = set(), set()
    core_ids_complete = True
    for package, core in pairs:
        package = package.strip() if package is not None else None
        if package is None or package in ("", "-1"):
            return None, None
        packages.add(package)
        core = core.strip() if core is not None else None
        if core is None or core in ("", "-1"):
            core_ids_complete = False
        else:
            cores.add((package, core))
    if not packages:
        return None, None
    return len(packages), (len(cores) if core_ids_complete else None)


def parse_cpu_list(text: str) -> list[int]:
    """CPU numbers from a sysfs list such as "0-3,6,8-9"; [] for anything unparseable."""
    numbers: list[int] = []
    try:
        for part in text.strip().split(","):
            if not part:
                continue
            low, _, high = part.partition("-")
            numbers.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        return []
    return numbers


class CpuCollector(Collector):
    provides = ("model", "sockets", "cores", "threads", "mhz")

    def gather(self) -> dict:
        text = self.source.read(CPUINFO_PATH)
        facts = parse_cpuinfo(text or "")
        online = parse_cpu_list(self.source.read(ONLINE_PATH) or "")
        if facts["threads"] is None and online:
            facts["threads"] = len(online)
        if (facts["sockets"] is None or facts["cores"] is None) and online:
            sockets, cores = count_topology(
                (
                    self.source.read(TOPOLOGY_PATH.format(n=n, name="physical_package_id")),
                    self.source.read(TOPOLOGY_PATH.format(n=n, name="core_id")),
                )
                for n in online
            )
            facts["sockets"] = facts["sockets"] if facts["sockets"] is not None else sockets
            facts["cores"] = facts["cores"] if facts["cores"] is not None else cores
        if facts["mhz"] is None:
            facts["mhz"] = self.source.cpu_freq_mhz()
        if facts["mhz"] is not None:
            facts["mhz"] = round(facts["mhz"], 3)
        return facts
