"""Facts of a host without Python: one POSIX sh script prints the raw sources, parsed here.

`script(nonce)` is sent to the host (over SSH, in one round trip); it prints each file and
command output between marker lines that carry the nonce. `parse(output, nonce)` serves those
sections to the very plugins the agent runs, through `CapturedSource`, so a host reached this
way gets the same facts, asset rows and change history as one with the agent.

Only markers carrying the nonce count: the nonce is a fresh secret per collection, so a file on
the host (a mount point name, a DMI string, an interface name) cannot open or close a section.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace

from collectors import DEFAULT_PLUGINS, collect
from collectors.cpu import CPUINFO_PATH, ONLINE_PATH, TOPOLOGY_PATH
from collectors.disks import LSBLK, LSBLK_COLUMNS, LSBLK_PAIRS, MOUNTS_PATH
from collectors.hardware import DEVICE_TREE_PATH, DMI_FILES, DMI_PATH
from collectors.memory import DMIDECODE_MEMORY, MEMINFO_PATH
from collectors.network import BONDING_PATH, IP_JSON, IP_TEXT, KIND_FILES
from collectors.system import OS_RELEASE_PATHS, UPTIME_PATH

__all__ = ["CapturedSource", "parse", "report", "script", "sections"]

_NONCE = re.compile(r"[A-Za-z0-9]{16,128}")
E_NONCE = "the nonce must be 16 to 128 letters and digits (a fresh secrets.token_hex(16))"

#: Command outputs the plugins ask for, by the section name the script prints them under.
COMMANDS: dict[tuple[str, ...], str] = {
    LSBLK: "lsblk-json",
    LSBLK_PAIRS: "lsblk-pairs",
    DMIDECODE_MEMORY: "dmidecode-memory",
    IP_JSON: "ip-json",
    IP_TEXT: "ip-addr",
}

# Files read as they are. Sysfs files of network interfaces and CPUs are found by globs below.
FILES = (
    *OS_RELEASE_PATHS,
    UPTIME_PATH,
    CPUINFO_PATH,
    ONLINE_PATH,
    MEMINFO_PATH,
    MOUNTS_PATH,
    *(DMI_PATH.format(file=file) for file in DMI_FILES.values()),
    DEVICE_TREE_PATH.format(file="model"),
    DEVICE_TREE_PATH.format(file="serial-number"),
)
NET_FILES = (*KIND_FILES, "speed")

# The script. `M` opens a section ("<marker> f <path>" or "<marker> c <name>"), then the raw
# bytes, then a newline and "<marker> e <exit status>" closes it: the parser drops exactly that
# one newline, so a file without a final newline comes back as it is. stderr goes nowhere.
# LC_ALL=C keeps tools printing the format the parsers read; PATH gains the sbin folders that
# a non-login SSH session often lacks (dmidecode, ip).
_SCRIPT = r"""
M='@@{nonce}'
LC_ALL=C; LANG=C; export LC_ALL LANG
PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"; export PATH
exec 2>/dev/null
_end() {{ printf '\n%s e %s\n' "$M" "$1"; }}
_f() {{ [ -e "$1" ] || return 0; printf '%s f %s\n' "$M" "$1"; cat -- "$1"; _end $?; }}
_c() {{ _n=$1; shift; printf '%s c %s\n' "$M" "$_n"; "$@"; _end $?; }}
_has() {{ command -v "$1" >/dev/null; }}
# A tool that may block (DNS, a dead NFS server under df) is killed after $1 seconds; KILL,
# because a process stuck in a killable NFS wait ignores TERM (and busybox timeout has no -k).
_t() {{ _s=$1; shift; if _has timeout; then timeout -s KILL "$_s" "$@"; else "$@"; fi; }}
_c uname-s uname -s
_c uname-n uname -n
_c uname-r uname -r
_c uname-v uname -v
_c uname-m uname -m
_fqdn() {{
  if _has hostname && _t 5 hostname -f; then return 0; fi
  _has getent && _t 5 getent ahosts "$(uname -n)" | awk 'NR == 1 {{ print $3 }}'
}}
_c fqdn _fqdn
_c btime awk '$1 == "btime" {{ print $2 }}' /proc/stat
for _p in {files}; do _f "$_p"; done
_topology() {{
  for _d in /sys/devices/system/cpu/cpu[0-9]*; do
    [ -d "$_d/topology" ] || continue
    printf '%s' "${{_d##*/cpu}}"
    for _n in physical_package_id core_id thread_siblings_list; do
      printf ' %s' "$(cat "$_d/topology/$_n" || echo -)"
    done
    echo
  done
}}
_c topology _topology
_cpufreq() {{
  for _d in /sys/devices/system/cpu/cpufreq/policy[0-9]*; do
    [ -d "$_d" ] && {{ cat "$_d/scaling_cur_freq" || cat "$_d/cpuinfo_cur_freq"; }}
  done
}}
_c cpufreq _cpufreq
for _d in /sys/class/net/*; do
  [ -e "$_d" ] || continue
  for _n in {net_files}; do _f "$_d/$_n"; done
  _f "{bonding}"
done
if _has lsblk; then
  _c lsblk-json lsblk --json --bytes -o {columns}
  _c lsblk-pairs lsblk --pairs --bytes -o {columns}
fi
if _has ip; then
  _c ip-json ip -json addr show
  _c ip-addr ip addr show
fi
# -a: every mount, as the agent's statvfs sees them (GNU df otherwise folds bind mounts);
# -B1: exact bytes where df has it, else POSIX 1024-blocks.
_df() {{ _t 20 df -P -a -B1 || _t 20 df -P -a -k || _t 20 df -P -k; }}
_c df _df
if [ "$(id -u)" = 0 ] && _has dmidecode; then _c dmidecode-memory _t 20 dmidecode -t memory; fi
"""


def script(nonce: str) -> str:
    """The POSIX sh script that prints every raw source between markers carrying `nonce`.

    Feed it to `sh -s` on the host's stdin (no quoting through the login shell, no length
    limit of a command line); it needs only sh, cat and awk, uses the rest where present, and
    exits 0. It reads what the agent reads and changes nothing.
    """
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise ValueError(E_NONCE)
    return _SCRIPT.format(
        nonce=nonce,
        files=" ".join(FILES),
        net_files=" ".join(NET_FILES),
        columns=LSBLK_COLUMNS,
        bonding=BONDING_PATH.format(name="${_d##*/}"),
    ).lstrip()


def sections(output: str, nonce: str) -> dict[tuple[str, str], tuple[str, int]]:
    """{(kind, name): (text, exit status)} of the sections in `output` marked with `nonce`.

    kind is "f" (a file, by path) or "c" (a command, by the script's name for it). Text outside
    sections (a login banner, a motd) and markers with another nonce are ignored; a section
    that never ends (the output was cut short) is dropped rather than half-read.
    """
    if not _NONCE.fullmatch(nonce or ""):
        raise ValueError(E_NONCE)
    marker = re.escape(f"@@{nonce}")
    opening = re.compile(rf"^{marker} ([fc]) (.+)\n", re.MULTILINE)
    closing = re.compile(rf"\n{marker} e (\d+)$", re.MULTILINE)
    found: dict[tuple[str, str], tuple[str, int]] = {}
    position = 0
    while True:
        start = opening.search(output, position)
        if start is None:
            return found
        end = closing.search(output, start.end())
        if end is None:
            return found
        found.setdefault((start[1], start[2]), (output[start.end() : end.start()], int(end[1])))
        position = end.end()


class CapturedSource:
    """A `collectors.Source` that answers from a script's sections instead of the local host.

    Each method returns what the real Source would have returned on that host, or None (or
    empty) for what the script could not read, exactly as Source does for a missing file.
    """

    def __init__(self, found: dict[tuple[str, str], tuple[str, int]]):
        self._found = found
        self._files = {
            name: text for (kind, name), (text, rc) in found.items() if kind == "f" and rc == 0
        }
        self._files.update(self._topology_files())
        self._mounts = parse_df(self._command("df") or "")

    def _command(self, name: str) -> str | None:
        text, rc = self._found.get(("c", name), (None, 1))
        return text if rc == 0 else None

    def _line(self, name: str) -> str | None:
        text = self._command(name)
        return text.strip() if text and text.strip() else None

    def _topology_files(self) -> dict[str, str]:
        """The sysfs topology files, from the script's "<cpu> <package> <core> <siblings>" lines."""
        files = {}
        names = ("physical_package_id", "core_id", "thread_siblings_list")
        for line in (self._command("topology") or "").splitlines():
            fields = line.split()
            if not fields or not fields[0].isdigit():
                continue
            for name, value in zip(names, fields[1:], strict=False):
                if re.fullmatch(r"-?\d+|\d[\d,-]*", value):  # "-": the file was missing
                    files[TOPOLOGY_PATH.format(n=int(fields[0]), name=name)] = value + "\n"
        return files

    def read(self, path: str) -> str | None:
        return self._files.get(path)

    def run(self, argv: Sequence[str]) -> str | None:
        name = COMMANDS.get(tuple(argv))
        return self._command(name) if name else None

    def statvfs(self, path: str) -> SimpleNamespace | None:
        """What df printed for `path` as statvfs fields (df's used = f_blocks - f_bfree)."""
        return self._mounts.get(path)

    def hostname(self) -> str | None:
        return self._line("uname-n")

    def fqdn(self, hostname: str) -> str | None:
        return self._line("fqdn")

    def uname(self) -> os.uname_result | None:
        fields = [self._line(f"uname-{flag}") for flag in "snrvm"]
        return None if None in fields else os.uname_result(fields)

    def boot_time(self) -> float | None:
        try:
            return float(self._line("btime") or "")
        except ValueError:
            return None

    def cpu_freq_mhz(self) -> float | None:
        """The mean of the policies' current kHz, in MHz, as psutil.cpu_freq() computes it."""
        khz = [int(v) for v in (self._command("cpufreq") or "").split() if v.isdigit()]
        mhz = sum(khz) / len(khz) / 1000 if khz else None
        return mhz if mhz and mhz > 0 else None

    def net_if_addrs(self) -> dict:
        return {}  # no psutil there: NetworkCollector falls back to iproute2's output

    def net_if_stats(self) -> dict:
        return {}


# A `df -P` line: device (may hold spaces), four numbers, capacity, mount point (may too).
_DF_LINE = re.compile(r"(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%|-)\s+(/.*)")
_DF_UNIT = re.compile(r"\s(\d+)-blocks\s")


def parse_df(text: str) -> dict[str, SimpleNamespace]:
    """{mount point: statvfs-like fields} from `df -P` output in bytes or 1024-blocks."""
    lines = text.splitlines()
    if not lines:
        return {}
    unit = _DF_UNIT.search(f" {lines[0]} ")
    frsize = int(unit[1]) if unit else 1024
    found = {}
    for line in lines[1:]:
        match = _DF_LINE.fullmatch(line)
        if match:
            total, used, avail = int(match[2]), int(match[3]), int(match[4])
            found[match[6]] = SimpleNamespace(
                f_frsize=frsize, f_blocks=total, f_bfree=total - used, f_bavail=avail
            )
    return found


def parse(output: str, nonce: str, plugins: dict[str, str] | None = None) -> dict:
    """The facts mapping ({"system": ..., "cpu": ...}) the agent's collect() reports.

    `output` is the script's stdout decoded as UTF-8 with errors="replace" (what Source.read
    does with a file); `nonce` the one the script was made with.
    """
    return report(output, nonce, plugins)["facts"]


def report(
    output: str,
    nonce: str,
    plugins: dict[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> dict:
    """A whole collect() report (version, facts, errors, durations) from the script's output."""
    source = CapturedSource(sections(output, nonce))
    return collect(DEFAULT_PLUGINS if plugins is None else plugins, source=source, clock=clock)
