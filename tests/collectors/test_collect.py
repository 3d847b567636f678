"""Tests for collectors.collect() and load_plugin(): the report, its errors, and what may load."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import collectors
from collectors import DEFAULT_PLUGINS, collect, load_plugin
from collectors.base import Collector
from collectors.cpu import CpuCollector

ROOT = Path(__file__).resolve().parents[2]


# --- load_plugin -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dotted",
    [
        "os.system",
        "subprocess.Popen",
        "collectorsx.cpu.CpuCollector",  # a look-alike package name
        "tests.collectors.conftest.FakeSource",
        ".cpu.CpuCollector",  # relative names would resolve against whoever imports
        "collectors",
        "collectors.",
        "collectors..cpu.CpuCollector",
        "collectors.cpu.CpuCollector ",
        "collectors._private.Thing",
        "collectors.cpu.__class__",
        None,
        42,
    ],
)
def test_load_plugin_refuses_modules_outside_collectors(dotted):
    with pytest.raises(ValueError, match="refusing plugin"):
        load_plugin(dotted)


@pytest.mark.parametrize(
    "dotted",
    [
        "collectors.source.subprocess",  # a module imported by one of ours
        "collectors.source.Source",
        "collectors.system.parse_os_release",
        "collectors.base.Collector",  # the abstract base itself
    ],
)
def test_load_plugin_refuses_names_under_collectors_that_are_not_collectors(dotted):
    with pytest.raises(ValueError, match="not a Collector subclass"):
        load_plugin(dotted)


def test_load_plugin_does_not_walk_through_imported_modules():
    # "collectors.source.subprocess.Popen" must not reach subprocess via getattr chains.
    with pytest.raises(ImportError):
        load_plugin("collectors.source.subprocess.Popen")


def test_load_plugin_reports_a_missing_plugin_as_import_error():
    with pytest.raises(ImportError):
        load_plugin("collectors.nosuchmodule.NoSuchCollector")
    with pytest.raises(ImportError, match="has no plugin 'NoSuchCollector'"):
        load_plugin("collectors.cpu.NoSuchCollector")


def test_default_plugins_all_load_and_declare_what_they_provide():
    for dotted in DEFAULT_PLUGINS.values():
        plugin = load_plugin(dotted)
        assert issubclass(plugin, Collector)
        assert plugin.provides and len(set(plugin.provides)) == len(plugin.provides)


# --- collect() with a fake host ----------------------------------------------------------------


def test_report_has_version_clock_time_facts_errors_and_durations(fake_source):
    report = collect(source=fake_source(), clock=lambda: 1700000000.5)

    assert report["version"] == 1
    assert report["collected_at"] == 1700000000.5
    assert set(report["facts"]) == set(DEFAULT_PLUGINS)
    assert report["errors"] == {}
    assert set(report["durations"]) == set(DEFAULT_PLUGINS)
    assert all(isinstance(d, float) and d >= 0 for d in report["durations"].values())


def test_host_without_any_source_reports_none_not_exceptions(fake_source):
    # A FakeSource with nothing in it: no /proc, no /sys, no tools, no psutil answers.
    report = collect(source=fake_source(hostname=None, uname=None), clock=lambda: 0.0)

    assert report["errors"] == {}
    for name, dotted in DEFAULT_PLUGINS.items():
        facts = report["facts"][name]
        assert list(facts) == list(load_plugin(dotted).provides)
        for value in facts.values():
            assert value in (None, [])


class ExplodingSource:
    """A Source whose every method raises: the plugins reading it must fail, one by one."""

    def __getattr__(self, name):
        def explode(*args, **kwargs):
            raise RuntimeError(f"{name} is broken")

        return explode


def test_failing_plugin_becomes_error_entry_and_others_still_report(fake_source):
    source = fake_source(files={"/etc/os-release": "ID=debian\n"})
    real_read = source.read

    def read(path):
        if path == "/proc/cpuinfo":
            raise RuntimeError("cpuinfo is broken")
        return real_read(path)

    source.read = read
    report = collect(source=source)

    assert set(report["errors"]) == {"cpu"}
    error = report["errors"]["cpu"]
    assert error["error"] == "RuntimeError: cpuinfo is broken"
    assert "Traceback (most recent call last)" in error["traceback"]
    assert "in gather" in error["traceback"]
    assert set(report["facts"]) == set(DEFAULT_PLUGINS) - {"cpu"}
    assert report["facts"]["system"]["os_id"] == "debian"
    assert set(report["durations"]) == set(DEFAULT_PLUGINS)
    json.dumps(report)


def test_every_plugin_failing_still_gives_a_complete_report():
    report = collect(source=ExplodingSource())

    assert report["facts"] == {}
    assert set(report["errors"]) == set(DEFAULT_PLUGINS)
    json.dumps(report)


def test_refused_or_missing_plugin_becomes_error_entry(fake_source):
    report = collect(
        {
            "evil": "os.system",
            "missing": "collectors.nosuchmodule.Thing",
            "cpu": "collectors.cpu.CpuCollector",
        },
        source=fake_source(),
    )

    assert report["errors"]["evil"]["error"].startswith("ValueError: refusing plugin 'os.system'")
    assert report["errors"]["missing"]["error"].startswith("ModuleNotFoundError:")
    assert set(report["facts"]) == {"cpu"}


def test_fact_json_cannot_carry_becomes_error_entry(fake_source):
    # No cpuinfo, and psutil answers NaN: not JSON, so the plugin fails, not the whole report.
    report = collect({"cpu": "collectors.cpu.CpuCollector"}, fake_source(cpu_freq_mhz=float("nan")))

    assert report["errors"]["cpu"]["error"].startswith("ValueError: Out of range float")
    json.dumps(report, allow_nan=False)


def test_plugin_returning_undeclared_facts_is_an_error(fake_source, monkeypatch):
    monkeypatch.setattr(CpuCollector, "gather", lambda self: {"model": "x", "colour": "blue"})

    report = collect({"cpu": "collectors.cpu.CpuCollector"}, fake_source())

    assert "undeclared facts ['colour']" in report["errors"]["cpu"]["error"]


def test_collect_passes_the_clock_to_plugins(fake_source):
    # No /proc/uptime: uptime is worked out from the boot time and the given clock.
    report = collect(
        {"system": "collectors.system.SystemCollector"},
        fake_source(boot_time=1000.0),
        clock=lambda: 4600.0,
    )

    assert report["facts"]["system"]["uptime_s"] == 3600


# --- on this machine ---------------------------------------------------------------------------


def test_collect_on_this_machine_is_json_serialisable_and_reports_every_plugin():
    report = collect()

    decoded = json.loads(json.dumps(report, allow_nan=False))
    assert decoded == report
    assert set(report["facts"]) | set(report["errors"]) == set(DEFAULT_PLUGINS)
    assert not set(report["facts"]) & set(report["errors"])
    assert set(report["durations"]) == set(DEFAULT_PLUGINS)
    for name, facts in report["facts"].items():
        assert list(facts) == list(load_plugin(DEFAULT_PLUGINS[name]).provides)
    system = report["facts"].get("system")
    if system is not None:  # any Linux host knows these much
        assert system["hostname"] and system["kernel"] and system["arch"]


def test_collectors_import_no_django():
    # The agent is a Celery worker that must never import Django; check in a fresh interpreter.
    code = (
        "import sys, collectors\n"
        "for dotted in collectors.DEFAULT_PLUGINS.values():\n"
        "    collectors.load_plugin(dotted)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'cmdb', 'celery'))\n"
        "print(bad)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_public_names_exist_and_every_default_plugin_is_a_collector_of_its_subject():
    for name in collectors.__all__:
        assert getattr(collectors, name) is not None, name
    # The subjects the CMDB stores (cmdb.assets.normalize reads them by these names).
    assert set(DEFAULT_PLUGINS) == {"system", "cpu", "memory", "disks", "network", "hardware"}
    for subject, dotted in DEFAULT_PLUGINS.items():
        plugin = collectors.load_plugin(dotted)
        assert issubclass(plugin, collectors.Collector) and plugin.provides, dotted
        assert plugin.__module__ == f"collectors.{subject}"
