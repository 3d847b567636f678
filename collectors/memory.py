"""Memory: total RAM and swap from /proc/meminfo, installed DIMMs from dmidecode (root only)."""

from __future__ import annotations

import re

from collectors.base import Collector
from collectors.values import clean

MEMINFO_PATH = "/proc/meminfo"
DMIDECODE_MEMORY = ("dmidecode", "-t", "memory")

MEMORY_DEVICE = 17  # SMBIOS structure type of one memory slot

_HANDLE = re.compile(r"Handle 0x[0-9A-Fa-f]+, DMI type (\d+), \d+ bytes")
_SIZE = re.compile(r"(\d+)\s*(bytes|kB|KB|MB|GB|TB)")
_SPEED = re.compile(r"(\d+)\s*(MT/s|MHz)")
# dmidecode prints binary multiples with SI names ("16 GB" is 16 GiB).
_UNITS = {"bytes": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
# What dmidecode prints for an empty slot, in current and in 2.x versions.
EMPTY_SLOT = ("No Module Installed", "Not Installed")


def parse_meminfo(text: str) -> dict[str, int]:
    """Every /proc/meminfo line as name -> value, in bytes where the line says kB."""
    values = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not fields or not fields[0].isdigit():
            continue
        scale = 1024 if fields[1:] == ["kB"] else 1  # HugePages_Total and friends are counts
        values[name.strip()] = int(fields[0]) * scale
    return values


def parse_dmidecode(text: str) -> list[tuple[int, str, dict[str, str]]]:
    """(DMI type, title, {field: value}) for each structure in dmidecode's text output.

    Only one-tab "Field: value" lines are kept; the two-tab lines under a field are list items
    (e.g. "Characteristics:") that no collector uses.
    """
    records: list[tuple[int, str, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        handle = _HANDLE.match(line)
        if handle:
            current = {}
            records.append((int(handle[1]), "", current))
        elif current is None or not line.strip():
            current = None  # a blank line ends the structure
        elif not line.startswith("\t"):
            dmi_type, title, fields = records[-1]
            if not title:  # the line after the handle names the structure
                records[-1] = (dmi_type, line.strip(), fields)
        elif not line.startswith("\t\t"):
            name, sep, value = line.strip().partition(":")
            if sep:
                current[name.strip()] = value.strip()
    return records


def parse_dmidecode_memory(text: str) -> list[dict]:
    """One dict per populated memory slot in `dmidecode -t memory` output; empty slots skipped."""
    dimms = []
    for dmi_type, _title, fields in parse_dmidecode(text):
        size = fields.get("Size", "")
        if dmi_type != MEMORY_DEVICE or size in EMPTY_SLOT:
            continue
        dimms.append(
            {
                "locator": clean(fields.get("Locator")),
                "size_bytes": _size_bytes(size),
                "type": clean(fields.get("Type")),
                "speed_mts": _speed(fields.get("Speed", "")),
                "manufacturer": clean(fields.get("Manufacturer")),
                "serial": clean(fields.get("Serial Number")),
            }
        )
    return dimms


def _size_bytes(text: str) -> int | None:
    match = _SIZE.fullmatch(text.strip())
    return int(match[1]) * _UNITS[match[2]] if match else None


def _speed(text: str) -> int | None:
    # dmidecode before 3.2 printed "MHz" for what is a transfer rate; the number is the same.
    match = _SPEED.fullmatch(text.strip())
    return int(match[1]) if match else None


class MemoryCollector(Collector):
    provides = ("total_bytes", "swap_bytes", "dimms")

    def gather(self) -> dict:
        meminfo = parse_meminfo(self.source.read(MEMINFO_PATH) or "")
        # dmidecode needs root (it reads /sys/firmware/dmi/tables or /dev/mem); without it, or
        # without the tool, or in a VM with no SMBIOS tables, the list is simply empty.
        dmidecode = self.source.run(DMIDECODE_MEMORY)
        return {
            "total_bytes": meminfo.get("MemTotal"),
            "swap_bytes": meminfo.get("SwapTotal"),
            "dimms": parse_dmidecode_memory(dmidecode) if dmidecode else [],
        }
