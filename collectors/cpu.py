"""Processors: model, sockets, physical cores, logical threads and clock speed."""

from __future__ import annotations

import re
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
    ("0x41", "0xb02"): "ARM11-MPCore",
    ("0x41", "0xb36"): "ARM1136",
    ("0x41", "0xb56"): "ARM1156",
    ("0x41", "0xb76"): "ARM1176",
    ("0x41", "0xc05"): "Cortex-A5",
    ("0x41", "0xc07"): "Cortex-A7",
    ("0x41", "0xc08"): "Cortex-A8",
    ("0x41", "0xc09"): "Cortex-A9",
    ("0x41", "0xc0d"): "Cortex-A17",
    ("0x41", "0xc0e"): "Cortex-A17",
    ("0x41", "0xc0f"): "Cortex-A15",
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
    ("0x41", "0xd48"): "Cortex-X2",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4d"): "Cortex-A715",
    ("0x41", "0xd4e"): "Cortex-X3",
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


# What arm kernels print as the model when they know no better; the part number names the core.
_GENERIC_ARM = re.compile(r"(ARMv\d+\S*|AArch64) [Pp]rocessor\b.*")
# The model, by the key each architecture prints it under, in the order they are tried:
# x86 and arm32, LoongArch, MIPS, RISC-V, POWER and SPARC. "Processor" is old arm's preamble.
MODEL_KEYS = ("model name", "Model Name", "cpu model", "uarch", "cpu", "Processor")
_S390_PROCESSOR = re.compile(r"processor \d+")  # "processor 0: version = FF, ... machine = 2964"
_SPARC_CLOCK = re.compile(r"Cpu\d+ClkTck")  # the clock in Hz, in hex, one line per CPU


def parse_cpuinfo(text: str) -> dict:
    """model, sockets, cores, threads and mhz from /proc/cpuinfo; None for what it does not say.

    Every architecture's layout: a CPU starts at its "processor" line (s390x: "cpu number"),
    blank lines or not, and the lines outside CPUs (arm's Features and Hardware, POWER's
    platform, s390x's and SPARC's whole file) are read as shared by all CPUs.

    Sockets and cores come from distinct (package, core) ids, so hyperthreads and gaps in core
    numbering do not skew them. Where those lines are missing (arm, POWER, some hypervisors)
    both are None and the caller asks sysfs instead.
    """
    cpus, shared, s390_processors = _records(text)
    first = cpus[0] if cpus else {}

    def get(key: str) -> str | None:
        return first.get(key) or shared.get(key) or None

    threads = len(cpus) or len(s390_processors) or None
    if threads is None:  # SPARC lists no CPUs, only counts; s390x without its per-CPU lines
        threads = _int(shared.get("ncpus active")) or _int(shared.get("# processors"))
    sockets, cores = count_topology(
        (cpu.get("physical id", cpu.get("package")), cpu.get("core id", cpu.get("core")))
        for cpu in cpus
    )
    if sockets is not None and cores is None and _int(get("cpu cores")):
        cores = sockets * _int(get("cpu cores"))  # core ids hidden, per-socket count given
    speeds = [_mhz(cpu) for cpu in cpus] or [_mhz(shared)]
    speeds += [_float(int(v, 16) / 1e6) for k, v in shared.items() if _SPARC_CLOCK.fullmatch(k)
               and re.fullmatch(r"[0-9a-fA-F]+", v)]  # fmt: skip
    speeds = [speed for speed in speeds if speed]
    return {
        "model": _model(get, s390_processors),
        "sockets": sockets,
        "cores": cores,
        "threads": threads,
        # The highest, not the first: with frequency scaling idle cores report their floor.
        "mhz": max(speeds) if speeds else None,
    }


def _records(text: str) -> tuple[list[dict[str, str]], dict[str, str], list[str]]:
    """(one dict per CPU, the lines outside CPUs, s390x's "processor N" lines)."""
    cpus: list[dict[str, str]] = []
    shared: dict[str, str] = {}
    s390_processors: list[str] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None  # a blank line ends a CPU; what follows is shared until the next
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key in ("processor", "cpu number"):
            current = {}
            cpus.append(current)
        elif _S390_PROCESSOR.fullmatch(key):
            s390_processors.append(value)
            continue
        (shared if current is None else current).setdefault(key, value)
    return cpus, shared, s390_processors


def _model(get, s390_processors: list[str]) -> str | None:
    model = next((get(key) for key in MODEL_KEYS if get(key)), None)
    implementer = (get("CPU implementer") or "").lower()
    part = (get("CPU part") or "").lower()
    if implementer and part and (model is None or _GENERIC_ARM.fullmatch(model)):
        vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer}")
        if (implementer, part) in ARM_PARTS or model is None:
            return f"{vendor} {ARM_PARTS.get((implementer, part), f'part {part}')}"
    if model is None and get("vendor_id") == "IBM/S390":
        # s390x names no model, only the machine type ("2964" is a z13) on each processor line.
        machine = re.search(r"machine = (\w+)", s390_processors[0] if s390_processors else "")
        return f"IBM/S390 {machine[1]}" if machine else "IBM/S390"
    # Some Xeons pad with runs of spaces, SPARC puts two before its code name.
    return " ".join(model.split()) if model else None


def _mhz(fields: dict[str, str]) -> float | None:
    for key, value in fields.items():
        # x86 "cpu MHz", LoongArch "CPU MHz", s390x "cpu MHz dynamic", POWER "clock: 3000MHz".
        if key.lower() in ("cpu mhz", "cpu mhz dynamic", "clock"):
            return _float(value.removesuffix("MHz").strip())
    return _float(fields.get("cpu MHz static"))


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _float(value) -> float | None:
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


def count_siblings(lists: Iterable[str | None]) -> int | None:
    """Physical cores: distinct thread_siblings_list values, one per CPU; None if one is missing."""
    cores = set()
    for text in lists:
        cpus = parse_cpu_list(text or "")
        if not cpus:
            return None
        cores.add(tuple(cpus))
    return len(cores) or None


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
                (self._topology(n, "physical_package_id"), self._topology(n, "core_id"))
                for n in online
            )
            # core_id is unique only within a cluster on newer arm64 and RISC-V kernels (64
            # cores numbered 0-3 in 16 clusters): the CPUs sharing a core are the surer count.
            siblings = count_siblings(self._topology(n, "thread_siblings_list") for n in online)
            cores = siblings if siblings is not None else cores
            facts["sockets"] = facts["sockets"] if facts["sockets"] is not None else sockets
            facts["cores"] = facts["cores"] if facts["cores"] is not None else cores
        if facts["mhz"] is None:
            facts["mhz"] = self.source.cpu_freq_mhz()
        if facts["mhz"] is not None:
            facts["mhz"] = round(facts["mhz"], 3)
        return facts

    def _topology(self, n: int, name: str) -> str | None:
        return self.source.read(TOPOLOGY_PATH.format(n=n, name=name))
