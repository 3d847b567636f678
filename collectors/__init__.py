"""Fact collectors: one plugin per subject, pure Python, no Django (see issue 4).

`collect()` runs each plugin named in a mapping and returns one JSON-ready report; a plugin that
fails becomes an entry under "errors" and the others still report. Plugins are classes under
this package (see `collectors.base.Collector`) that read the host only through a `Source`.
"""

from __future__ import annotations

import importlib
import json
import re
import time
import traceback
from collections.abc import Callable

from collectors.base import Collector
from collectors.source import Source

__all__ = ["DEFAULT_PLUGINS", "REPORT_VERSION", "Collector", "Source", "collect", "load_plugin"]

#: Bumped when the report's shape changes incompatibly; the server refuses versions it lacks.
REPORT_VERSION = 1

DEFAULT_PLUGINS: dict[str, str] = {
    "system": "collectors.system.SystemCollector",
    "cpu": "collectors.cpu.CpuCollector",
    "memory": "collectors.memory.MemoryCollector",
    "disks": "collectors.disks.DisksCollector",
    "network": "collectors.network.NetworkCollector",
    "hardware": "collectors.hardware.HardwareCollector",
}

E_OUTSIDE = "refusing plugin {dotted!r}: plugins must be public classes under 'collectors.'"
E_NO_ATTRIBUTE = "module {module!r} has no plugin {name!r}"
E_NOT_A_COLLECTOR = "refusing plugin {dotted!r}: {obj!r} is not a Collector subclass"

# Public identifiers only: "collectors." followed by dotted names, none starting with "_".
_PLUGIN_PATH = re.compile(r"collectors(\.[A-Za-z][A-Za-z0-9_]*)+")


def load_plugin(dotted: str) -> type:
    """The Collector subclass at `dotted` ("collectors.cpu.CpuCollector").

    The plugin mapping can arrive in a task message, and importing whatever module a message
    names would let its sender run code on every agent; so only modules of this package are
    imported, and only Collector subclasses are returned. ValueError for a refused path,
    ImportError for an allowed one that does not exist.
    """
    if not isinstance(dotted, str) or not _PLUGIN_PATH.fullmatch(dotted):
        raise ValueError(E_OUTSIDE.format(dotted=dotted))
    module_name, _, name = dotted.rpartition(".")
    module = importlib.import_module(module_name)
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise ImportError(E_NO_ATTRIBUTE.format(module=module_name, name=name)) from None
    if not (isinstance(obj, type) and issubclass(obj, Collector)) or obj is Collector:
        raise ValueError(E_NOT_A_COLLECTOR.format(dotted=dotted, obj=obj))
    return obj


def collect(
    plugins: dict[str, str] | None = None,
    source: Source | None = None,
    clock: Callable[[], float] = time.time,
) -> dict:
    """Run each plugin ({report name: dotted path}, DEFAULT_PLUGINS if None) and report.

    Every plugin ends up under "facts" or under "errors" (as "ExcType: message" and its
    traceback), and under "durations" either way. Sizes are bytes, as ints.
    """
    plugins = DEFAULT_PLUGINS if plugins is None else plugins
    source = Source() if source is None else source
    report: dict = {
        "version": REPORT_VERSION,
        "collected_at": clock(),
        "facts": {},
        "errors": {},
        "durations": {},
    }
    for name, dotted in plugins.items():
        # perf_counter, not the clock: a wall clock stepped by NTP mid-run gives negative times.
        started = time.perf_counter()
        try:
            facts = load_plugin(dotted)(source, clock).collect()
            # A value JSON cannot carry would otherwise fail the whole report at serialisation.
            json.dumps(facts, allow_nan=False)
        except Exception as exc:
            report["errors"][name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        else:
            report["facts"][name] = facts
        report["durations"][name] = round(time.perf_counter() - started, 6)
    return report
