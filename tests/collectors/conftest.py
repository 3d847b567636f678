"""A fake Source serving captured files, shared by the collector tests.

A conftest rather than a helper module: with --import-mode=importlib, test files cannot import
one another, and every plugin's tests need the same fake host.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

DATA = Path(__file__).parent / "data"

UNAME = os.uname_result(("Linux", "web01", "5.15.0-105-generic", "#115-Ubuntu SMP", "x86_64"))


class FakeSource:
    """Serves files, command outputs and psutil answers from dicts; everything else is missing.

    Deliberately not a subclass of collectors.Source, so a method it lacks fails loudly instead
    of quietly reading the real machine.
    """

    def __init__(
        self,
        files=None,
        commands=None,
        statvfs=None,
        hostname="web01",
        fqdn=None,
        uname=UNAME,
        boot_time=None,
        cpu_freq_mhz=None,
        net_if_addrs=None,
        net_if_stats=None,
    ):
        self.files = dict(files or {})
        self.commands = {tuple(argv): out for argv, out in (commands or {}).items()}
        self._statvfs = dict(statvfs or {})
        self._hostname = hostname
        self._fqdn = fqdn
        self._uname = uname
        self._boot_time = boot_time
        self._cpu_freq_mhz = cpu_freq_mhz
        self._net_if_addrs = net_if_addrs or {}
        self._net_if_stats = net_if_stats or {}
        self.ran: list[tuple[str, ...]] = []

    def read(self, path):
        return self.files.get(path)

    def run(self, argv):
        assert not isinstance(argv, str), "commands are argv lists, never shell strings"
        self.ran.append(tuple(argv))
        return self.commands.get(tuple(argv))

    def statvfs(self, path):
        return self._statvfs.get(path)

    def hostname(self):
        return self._hostname

    def fqdn(self, hostname):
        return self._fqdn

    def uname(self):
        return self._uname

    def boot_time(self):
        return self._boot_time

    def cpu_freq_mhz(self):
        return self._cpu_freq_mhz

    def net_if_addrs(self):
        return self._net_if_addrs

    def net_if_stats(self):
        return self._net_if_stats


def data(*parts: str) -> str:
    """The text of a captured file under tests/collectors/data/."""
    return DATA.joinpath(*parts).read_text()


def tree(directory: str, mounted_at: str) -> dict[str, str]:
    """Every file under data/<directory> as {mounted_at/<relative path>: text}."""
    root = DATA / directory
    return {
        f"{mounted_at}/{path.relative_to(root).as_posix()}": path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def statvfs(size_blocks, free_blocks, avail_blocks, frsize=4096):
    return SimpleNamespace(
        f_frsize=frsize, f_blocks=size_blocks, f_bfree=free_blocks, f_bavail=avail_blocks
    )


@pytest.fixture
def fake_source():
    """The FakeSource class: `fake_source(files={...}, commands={...})`."""
    return FakeSource


@pytest.fixture
def captured():
    """Helpers for captured data: .data(plugin, name), .tree(dir, mounted_at), .statvfs(...)."""
    return SimpleNamespace(data=data, tree=tree, statvfs=statvfs, DATA=DATA)
