"""The salt gateway's pieces in workers/: the host-side wrapper that bounds output (run by a
real /bin/sh here, as a minion runs it), the salt-api client and its password file's checks."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from workers.salt_wrapper import NO_SPOOL, kill_script, no_spool, unwrap, wrapped
from workers.saltapi import SaltApi, SaltApiError, SaltAuthError, check_url, local, read_password


def run_wrapped(command: str, head: int = 16, tail: int = 8):
    done = subprocess.run(["/bin/sh", "-c", wrapped(command, "t-1", 20, head, tail)],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    how, out, err = unwrap(done.stdout)
    assert how == "R"
    return done.returncode, out, err


def test_short_output_is_whole_with_the_commands_exit_status():
    code, out, err = run_wrapped("echo hello; echo oops >&2; exit 3")
    assert code == 3
    assert (out.head, out.tail, out.total_bytes, out.truncated) == ("hello\n", "", 6, False)
    assert (err.head, err.total_bytes) == ("oops\n", 5)


def test_long_output_keeps_head_and_tail_and_the_true_size():
    code, out, _ = run_wrapped("seq 1 1000")
    assert code == 0 and out.truncated
    assert out.head == "1\n2\n3\n4\n5\n6\n7\n8\n"
    assert out.tail == "\n999\n1000\n"[-8:]
    assert out.total_bytes == len("".join(f"{i}\n" for i in range(1, 1001)))


def test_bytes_that_are_not_utf8_and_quotes_survive():
    code, out, _ = run_wrapped("printf 'caf\\351 \"it'\"'\"'s\"\\n'")
    assert code == 0
    assert out.head == 'caf\ufffd "it\'s"\n' and out.total_bytes == 12


def test_the_command_runs_in_its_own_shell_without_stdin():
    code, out, _ = run_wrapped("exit 0; echo never", head=100)
    assert code == 0 and out.total_bytes == 0


def test_the_deadline_kills_the_whole_group_a_grandchild_too(tmp_path):
    mark = tmp_path / "survived"
    script = wrapped(f"sh -c 'sleep 3; touch {mark}' & sleep 30", "t-2", 1, 16, 8)
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=20)
    assert unwrap(done.stdout)[0] == "T" and done.returncode == 137
    time.sleep(3.5)
    assert not mark.exists()


def test_cancel_kills_the_whole_group(tmp_path):
    mark = tmp_path / "survived"
    script = wrapped(f"sh -c 'sleep 2; touch {mark}' & sleep 30", "t-3", 60, 16, 8)
    proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    killed = subprocess.run(["/bin/sh", "-c", kill_script("t-3")], capture_output=True,
                            text=True, timeout=10)  # fmt: skip
    assert killed.stdout.strip() == "killed"
    out, _ = proc.communicate(timeout=10)
    assert unwrap(out)[0] == "C"
    time.sleep(2.5)
    assert not mark.exists()
    assert not list(Path("/tmp").glob("cmdb-salt.t-3.*"))


def _victim():
    """A process group of its own that a cancel must not touch."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    return proc


def _shared_tmp(tmp_path) -> Path:
    """A folder like /tmp: anyone may make things in it (sticky)."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def _sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=20)


def test_folders_another_user_made_first_neither_stop_nor_steer_the_wrapper(tmp_path):
    shared = _shared_tmp(tmp_path)
    # What the old fixed spool root was, taken by another user: a folder, and a symlink to
    # a folder of theirs. Neither is used: each command makes its own folder (mktemp -d).
    theirs = shared / "theirs"
    theirs.mkdir(mode=0o777)
    for planted in (shared / f"cmdb-salt.{os.getuid()}", shared / "cmdb-salt.t-7"):
        planted.mkdir()
        os.chown(planted, 65534, 65534)
    (shared / "cmdb-salt.t-7.link").symlink_to(theirs)
    script = wrapped("echo hi", "t-7", 5, 16, 8, spool=str(shared))
    done = _sh(script)
    assert done.returncode == 0, done.stdout + done.stderr
    how, out, _ = unwrap(done.stdout)
    assert (how, out.head) == ("R", "hi\n")
    assert not list(theirs.iterdir())  # nothing was spooled through their link


def test_the_spool_folder_is_ours_0700_and_gone_after(tmp_path):
    shared = _shared_tmp(tmp_path)
    # The command looks at every folder of its task there: the wrapper's own, while it runs.
    script = wrapped(f'stat -c "%u %a %F" {shared}/cmdb-salt.t-8.*', "t-8", 5, 64, 0,
                     spool=str(shared))  # fmt: skip
    done = _sh(script)
    how, out, _ = unwrap(done.stdout)
    assert how == "R" and f"{os.getuid()} 700 directory" in out.head, out.head
    assert not list(shared.iterdir())


def test_no_folder_is_a_clear_refusal_and_nothing_runs(tmp_path):
    mark = tmp_path / "ran"
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o500)
    done = _sh(wrapped(f"touch {mark}", "t-9", 5, 16, 8, spool=str(closed / "absent")))
    assert done.returncode == NO_SPOOL and not mark.exists()
    assert no_spool(done.stdout) == f"mktemp -d in {closed / 'absent'} failed"
    # A command of its own that exits 125 is not mistaken for that.
    done = _sh(wrapped("echo R; exit 125", "t-9", 5, 16, 8))
    assert done.returncode == NO_SPOOL and no_spool(done.stdout) is None
    assert unwrap(done.stdout)[1].head == "R\n"


def test_cancel_ignores_folders_not_ours_and_a_bad_pgid(tmp_path):
    shared = _shared_tmp(tmp_path)
    victim = _victim()
    try:
        # A task's folder name, made by another uid, with a pgid to kill: left alone.
        foreign = shared / "cmdb-salt.t-5.foreign"
        foreign.mkdir()
        (foreign / "pgid").write_text(f"{victim.pid}\n")
        os.chown(foreign, 65534, 65534)
        # Ours, but pgid 1, 0 or not a number, and a symlink to the foreign one: left alone.
        for name, pgid in (("one", "1"), ("zero", "0"), ("word", "-1"), ("dash", "1 2")):
            (shared / f"cmdb-salt.t-5.{name}").mkdir(mode=0o700)
            (shared / f"cmdb-salt.t-5.{name}" / "pgid").write_text(pgid + "\n")
        (shared / "cmdb-salt.t-5.link").symlink_to(foreign)
        killed = _sh(kill_script("t-5", spool=str(shared)))
        assert killed.stdout == "" and victim.poll() is None
        assert not (foreign / "cancelled").exists()
        # A mark that is a symlink is never followed (mkdir, not touch).
        ours = _victim()
        target = tmp_path / "touched"
        marked = shared / "cmdb-salt.t-6.marked"
        marked.mkdir(mode=0o700)
        (marked / "pgid").write_text(f"{ours.pid}\n")
        (marked / "cancelled").symlink_to(target)
        killed = _sh(kill_script("t-6", spool=str(shared)))
        assert killed.stdout.strip() == "killed" and ours.wait(timeout=5) == -9
        assert not target.exists() and (marked / "cancelled").is_symlink()
        # ... while the real thing beside them is still cancelled.
        script = wrapped("sleep 30", "t-5", 60, 16, 8, spool=str(shared))
        proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        killed = _sh(kill_script("t-5", spool=str(shared)))
        assert killed.stdout.strip() == "killed" and victim.poll() is None
        assert unwrap(proc.communicate(timeout=10)[0])[0] == "C"
    finally:
        victim.kill()


def test_an_answer_that_is_not_the_wrappers_is_refused():
    with pytest.raises((ValueError, IndexError)):
        unwrap("VALUE_TRIMMED")


def _secret(tmp_path, mode: int):
    path = tmp_path / "secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    os.write(fd, b"s3cret\n")
    os.close(fd)
    os.chmod(path, mode)
    return path


def test_password_file_0600_is_read(tmp_path):
    assert read_password(str(_secret(tmp_path, 0o600))) == "s3cret"


def test_password_file_others_may_read_is_refused(tmp_path):
    with pytest.raises(SaltApiError, match="mode 0644, must be 0600"):
        read_password(str(_secret(tmp_path, 0o644)))


def test_password_file_of_another_owner_is_refused(tmp_path):
    path = _secret(tmp_path, 0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(SaltApiError, match="owned by uid 65534, not by us"):
        read_password(str(path))


def test_password_keeps_its_spaces_only_the_line_end_goes(tmp_path):
    path = _secret(tmp_path, 0o600)
    path.write_bytes(b" s3 cret \n")
    assert read_password(str(path)) == " s3 cret "
    path.write_bytes(b"s3cret")
    assert read_password(str(path)) == "s3cret"


@pytest.mark.parametrize("url", ["https://salt.example:8000", "http://127.0.0.1:8000",
                                 "http://127.0.1.5:8000", "http://localhost:8000",
                                 "http://[::1]:8000"])  # fmt: skip
def test_a_url_the_password_may_go_to(url):
    assert check_url(url) == url and SaltApi(url, "ops", "pam", "x").url == url


@pytest.mark.parametrize("url", ["http://10.0.8.1:8000", "http://salt.example:8000",
                                 "ftp://127.0.0.1/", "127.0.0.1:8000", "https://"])  # fmt: skip
def test_plain_http_off_loopback_is_refused(url):
    with pytest.raises(SaltApiError, match="https is required unless salt-api is on loopback"):
        SaltApi(url, "ops", "pam", "s3cret")


def test_the_lowstate_targets_exactly_one_minion():
    assert local("web*", "test.ping", [], 5) == {
        "client": "local", "tgt": ["web*"], "tgt_type": "list", "fun": "test.ping", "arg": [],
        "timeout": 5}  # fmt: skip


def test_password_file_symlink_and_missing_are_refused(tmp_path):
    target = _secret(tmp_path, 0o600)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(SaltApiError):
        read_password(str(tmp_path / "link"))
    with pytest.raises(SaltApiError, match="No such file"):
        read_password(str(tmp_path / "absent"))


def test_the_client_never_shows_its_password():
    api = SaltApi("http://127.0.0.1:1/", "ops", "pam", "s3cret")
    assert "s3cret" not in repr(api)
    with pytest.raises(SaltApiError) as caught:
        api.run({"client": "local", "tgt": "x", "fun": "test.ping"}, timeout=2)
    assert not isinstance(caught.value, SaltAuthError)
    assert "could not be reached" in str(caught.value) and "s3cret" not in str(caught.value)
