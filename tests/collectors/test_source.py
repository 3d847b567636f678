"""Tests for collectors.source.Source on the real machine: every failure is None, nothing hangs."""

import os
import threading
import time

import pytest

from collectors.source import Source, call_with_timeout


def test_read_returns_file_text(tmp_path):
    path = tmp_path / "f"
    path.write_text("hello\n")
    assert Source().read(str(path)) == "hello\n"


def test_read_of_missing_file_or_directory_is_none(tmp_path):
    assert Source().read(str(tmp_path / "missing")) is None
    assert Source().read(str(tmp_path)) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_read_of_unreadable_file_is_none(tmp_path):
    path = tmp_path / "secret"
    path.write_text("x")
    path.chmod(0)
    assert Source().read(str(path)) is None


def test_read_replaces_undecodable_bytes(tmp_path):
    path = tmp_path / "latin1"
    path.write_bytes(b"caf\xe9\n")
    assert Source().read(str(path)) == "caf\ufffd\n"


def test_run_returns_stdout_of_a_command_that_succeeds():
    assert Source().run(["echo", "a b"]) == "a b\n"


def test_run_refuses_a_shell_string():
    with pytest.raises(TypeError, match="never a shell string"):
        Source().run("echo hi; rm -rf /")


def test_run_of_missing_tool_is_none():
    assert Source().run(["no-such-tool-for-collectors", "--json"]) is None


def test_run_of_failing_command_is_none():
    assert Source().run(["false"]) is None
    assert Source().run(["ls", "/no/such/path"]) is None


def test_run_kills_a_command_that_overruns_its_timeout_and_returns_none():
    started = time.monotonic()
    assert Source(command_timeout=0.3).run(["sleep", "30"]) is None
    assert time.monotonic() - started < 5


def test_run_uses_the_c_locale_so_output_matches_the_parsers():
    assert Source().run(["sh", "-c", 'echo "$LC_ALL"']) == "C\n"


def test_run_finds_tools_in_sbin_when_path_lacks_it(monkeypatch):
    # Celery workers started by hand often have no /usr/sbin in PATH; dmidecode lives there.
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Source().run(["ls", "/"]) is not None


def test_statvfs_of_a_real_path_and_of_a_missing_one(tmp_path):
    st = Source().statvfs(str(tmp_path))
    assert st is not None and st.f_blocks > 0
    assert Source().statvfs(str(tmp_path / "missing")) is None


def test_call_that_hangs_is_abandoned_after_its_timeout():
    # Stands in for statvfs() on a hard NFS mount whose server has gone away.
    release = threading.Event()
    started = time.monotonic()
    try:
        assert call_with_timeout(release.wait, 30, timeout=0.2) is None
        assert time.monotonic() - started < 2
    finally:
        release.set()


def test_call_still_stuck_from_before_is_not_tried_again():
    # Each collection would otherwise leave one more thread stuck on the same dead mount.
    release = threading.Event()
    try:
        assert call_with_timeout(release.wait, 31, timeout=0.1) is None
        threads = threading.active_count()
        started = time.monotonic()
        assert call_with_timeout(release.wait, 31, timeout=5) is None
        assert time.monotonic() - started < 1
        assert threading.active_count() == threads
    finally:
        release.set()
    time.sleep(0.1)  # the stuck call returns once released, and may be tried again
    assert call_with_timeout(release.wait, 31, timeout=1) is True


def test_run_refuses_an_empty_command():
    with pytest.raises(ValueError):
        Source().run([])


def test_psutil_answers_on_this_machine():
    source = Source()
    assert source.hostname()
    assert source.uname().sysname == "Linux"
    assert source.boot_time() is None or source.boot_time() > 0
    assert isinstance(source.net_if_addrs(), dict)
    assert isinstance(source.net_if_stats(), dict)
