"""Host identity and operating system: names, distribution, kernel, boot time."""

from __future__ import annotations

import re
import shlex

from collectors.base import Collector

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")  # the second is the spec's fallback
UPTIME_PATH = "/proc/uptime"

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of an os-release file, with shell quoting and escapes undone."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            continue
        fields[key] = _unquote(value)
    return fields


def _unquote(value: str) -> str:
    # The format is defined as shell variable assignments, so shlex reads it as a shell would.
    try:
        return " ".join(shlex.split(value))
    except ValueError:  # an unbalanced quote: keep what is there rather than lose the line
        return value.strip().strip("\"'")


def parse_uptime(text: str) -> float | None:
    """Seconds since boot from /proc/uptime ("4376.08 7967.96"), or None."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def choose_fqdn(hostname: str | None, canonical: str | None) -> str | None:
    """The resolver's canonical name unless it is a loopback name; else the hostname.

    That is what `hostname -f` prints. A canonical "localhost" for a host not called that only
    means /etc/hosts maps the hostname to 127.0.0.1, and must not become every host's FQDN.
    """
    if canonical and (_is_localhost(hostname) or not _is_localhost(canonical)):
        return canonical
    return hostname


def _is_localhost(name: str | None) -> bool:
    return bool(name) and name.split(".")[0].lower() in ("localhost", "localhost4", "localhost6")


class SystemCollector(Collector):
    provides = (
        "hostname",
        "fqdn",
        "os_id",
        "os_name",
        "os_version",
        "os_pretty",
        "kernel",
        "arch",
        "uptime_s",
        "boot_time",
    )

    def gather(self) -> dict:
        release = {}
        for path in OS_RELEASE_PATHS:
            text = self.source.read(path)
            if text is not None:
                release = parse_os_release(text)
                break
        uname = self.source.uname()
        hostname = self.source.hostname()
        canonical = self.source.fqdn(hostname) if hostname else None

        boot_time = self.source.boot_time()
        uptime = parse_uptime(self.source.read(UPTIME_PATH) or "")
        if uptime is None and boot_time is not None:
            uptime = self.clock() - boot_time
        if boot_time is None and uptime is not None:
            boot_time = self.clock() - uptime

        return {
            "hostname": hostname,
            "fqdn": choose_fqdn(hostname, canonical),
            "os_id": release.get("ID"),
            "os_name": release.get("NAME"),
            "os_version": release.get("VERSION_ID"),
            "os_pretty": release.get("PRETTY_NAME"),
            "kernel": uname.release if uname else None,
            "arch": uname.machine if uname else None,
            "uptime_s": int(uptime) if uptime is not None else None,
            "boot_time": int(boot_time) if boot_time is not None else None,
        }
