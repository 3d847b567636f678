"""Block devices from lsblk, and the usage of real (non-pseudo) mounted filesystems."""

from __future__ import annotations

import json
import os
import re

from collectors.base import Collector
from collectors.values import clean, to_bool, to_int

LSBLK_COLUMNS = "NAME,KNAME,MODEL,SERIAL,SIZE,TYPE,ROTA,WWN,PKNAME"
LSBLK = ("lsblk", "--json", "--bytes", "-o", LSBLK_COLUMNS)
# util-linux before 2.27 (CentOS/RHEL 7 ship 2.23) has no --json: KEY="value" pairs instead.
LSBLK_PAIRS = ("lsblk", "--pairs", "--bytes", "-o", LSBLK_COLUMNS)
MOUNTS_PATH = "/proc/mounts"

# Memory-backed block devices: swap in RAM (zram) and ramdisks hold no data worth inventorying.
_RAM_DEVICE = re.compile(r"(z?ram)\d+")

# Kernel and userspace filesystems that hold no data of the host's own. Listed rather than the
# real ones allowed, so that a real filesystem we did not think of is reported, not dropped.
PSEUDO_FILESYSTEMS = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fuse.gvfsd-fuse",
        "fuse.lxcfs",
        "fuse.portal",
        "fuse.snapfuse",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nfsd",
        "nsfs",
        "pipefs",
        "proc",
        "pstore",
        "ramfs",
        "rootfs",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "sockfs",
        "squashfs",  # snap packages: one read-only image per package, not storage
        "sysfs",
        "tmpfs",
        "tracefs",
        "xenfs",
    }
)
# Docker, Podman and Kubernetes bind-mount these files from the host's disk into containers;
# they would show up as the host's root filesystem under the file's name.
CONTAINER_FILE_MOUNTS = frozenset({"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"})
KERNEL_TREES = ("/proc", "/sys", "/dev")

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
# One KEY="value" of lsblk --pairs; quotes, backslashes and unprintable bytes come as \xHH.
_PAIR = re.compile(r'([A-Z][A-Z0-9:_-]*)="((?:[^"\\]|\\.)*)"')
_HEX_ESCAPES = re.compile(r"(?:\\x[0-9A-Fa-f]{2})+")


def parse_lsblk(json_text: str, *, include_loop_and_ram: bool = False) -> list[dict]:
    """Every device of `lsblk --json --bytes -o LSBLK_COLUMNS` output, flattened, tree order.

    A device lsblk shows under several parents (an md RAID under each member) is listed once,
    with the first parent. lsblk before 2.33 printed every value as a string; both are read.
    """
    devices: list[dict] = []
    seen: set[str] = set()

    def walk(nodes: list[dict], parent: str | None) -> None:
        for node in nodes:
            kname = node.get("kname") or node.get("name") or ""
            kind = node.get("type")
            if not include_loop_and_ram and (kind == "loop" or _RAM_DEVICE.fullmatch(kname)):
                continue  # and its partitions with it
            if kname in seen:
                continue
            seen.add(kname)
            devices.append(
                {
                    "name": node.get("name"),
                    "kname": node.get("kname"),
                    "model": clean(node.get("model")),
                    "serial": clean(node.get("serial")),
                    "size_bytes": to_int(node.get("size")),
                    "type": kind,
                    "rotational": to_bool(node.get("rota")),
                    "wwn": clean(node.get("wwn")),
                    "parent": node.get("pkname") or parent,
                }
            )
            walk(node.get("children") or [], kname)

    walk(json.loads(json_text).get("blockdevices") or [], None)
    return devices


def parse_lsblk_pairs(text: str, *, include_loop_and_ram: bool = False) -> list[dict]:
    """Every device of `lsblk --pairs --bytes -o LSBLK_COLUMNS` output, as parse_lsblk gives it.

    The lines come in tree order with the parent in PKNAME; columns an old lsblk lacks are None.
    """
    nodes = []
    for line in text.splitlines():
        pairs = {key.lower(): _unhex(value) for key, value in _PAIR.findall(line)}
        if pairs:
            nodes.append(pairs)
    devices: list[dict] = []
    seen: set[str] = set()
    skipped: set[str] = set()
    for node in nodes:
        kname = node.get("kname") or node.get("name") or ""
        parent = node.get("pkname") or None
        if not include_loop_and_ram and (
            node.get("type") == "loop" or _RAM_DEVICE.fullmatch(kname) or parent in skipped
        ):
            skipped.add(kname)  # and its partitions with it, as in the JSON tree
            continue
        if kname in seen:
            continue
        seen.add(kname)
        devices.append(
            {
                "name": node.get("name"),
                "kname": node.get("kname"),
                "model": clean(node.get("model")),
                "serial": clean(node.get("serial")),
                "size_bytes": to_int(node.get("size")),
                "type": node.get("type"),
                "rotational": to_bool(node.get("rota")),
                "wwn": clean(node.get("wwn")),
                "parent": parent,
            }
        )
    return devices


def _unhex(value: str) -> str:
    # A run of escapes is the bytes of one UTF-8 string (lsblk escapes each byte in the C locale).
    return _HEX_ESCAPES.sub(
        lambda m: bytes.fromhex(m[0].replace("\\x", "")).decode("utf-8", "replace"), value
    )


def parse_proc_mounts(text: str) -> list[dict]:
    """device, mountpoint, fstype and options of each /proc/mounts line, escapes undone."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype, options = (_unescape(f) for f in fields[:4])
        mounts.append(
            {"device": device, "mountpoint": mountpoint, "fstype": fstype, "options": options}
        )
    return mounts


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def real_filesystems(mounts: list[dict]) -> list[dict]:
    """The mounts that hold data: no pseudo filesystems, no container file binds, no shadows.

    When two mounts share a mountpoint only the last is visible, so only the last is kept.
    """
    visible: dict[str, dict] = {}
    for mount in mounts:
        mountpoint = mount["mountpoint"]
        visible.pop(mountpoint, None)  # re-inserted below at its new position, if kept
        if mount["fstype"] in PSEUDO_FILESYSTEMS or mountpoint in CONTAINER_FILE_MOUNTS:
            continue
        if any(mountpoint == tree or mountpoint.startswith(tree + "/") for tree in KERNEL_TREES):
            continue
        visible[mountpoint] = mount
    return list(visible.values())


def usage(st: os.statvfs_result | None) -> dict:
    """size, used and free bytes and used percent of a filesystem, as df computes them.

    Free is what unprivileged users may still write (f_bavail), and used_pct is relative to
    used + that, so a disk full to its root reserve shows 100 as it does in df.
    """
    if st is None:
        return {"size_bytes": None, "used_bytes": None, "free_bytes": None, "used_pct": None}
    size = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return {
        "size_bytes": size,
        "used_bytes": used,
        "free_bytes": free,
        "used_pct": round(100 * used / (used + free), 1) if used + free else None,
    }


class DisksCollector(Collector):
    provides = ("devices", "mounts")

    def gather(self) -> dict:
        lsblk = self.source.run(LSBLK)  # None in most containers and on hosts without util-linux
        try:
            devices = parse_lsblk(lsblk) if lsblk else None
        except ValueError:  # an lsblk that takes --json but prints something else: try pairs
            devices = None
        if devices is None:
            pairs = self.source.run(LSBLK_PAIRS)
            devices = parse_lsblk_pairs(pairs) if pairs else []
        mounts = []
        for mount in real_filesystems(parse_proc_mounts(self.source.read(MOUNTS_PATH) or "")):
            mounts.append(
                {
                    "mountpoint": mount["mountpoint"],
                    "device": mount["device"],
                    "fstype": mount["fstype"],
                    **usage(self.source.statvfs(mount["mountpoint"])),
                }
            )
        return {"devices": devices, "mounts": mounts}
