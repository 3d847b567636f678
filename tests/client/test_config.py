"""Where the thin client's token goes and where it is kept: HTTPS (or loopback) only, and a
config folder of the user's own that nobody else may write to. `cmdb` run as a process, as
a laptop would; nothing here reaches a server (the refusals come before any connection)."""

import os
import stat
import subprocess
import sys

import pytest

from client import config
from tests.support.fleet import ROOT


def cmdb(home, *args, env=None, stdin=""):
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "client", *args], cwd=home,
                          env={**base, **(env or {})}, capture_output=True, text=True,
                          input=stdin, timeout=60)  # fmt: skip


@pytest.mark.parametrize("url", ["http://cmdb.example.com", "http://10.0.0.5:8000/",
                                 "http://128.0.0.1", "http://127.0.0.1.example.com",
                                 "http://user@10.0.0.5", "ftp://127.0.0.1"])  # fmt: skip
def test_plain_http_to_anything_but_loopback_is_refused_before_anything_is_sent(tmp_path, url):
    done = cmdb(tmp_path, "login", url, "--token", "-", stdin="t" * 40 + "\n")
    assert done.returncode == 2 and "https://" in done.stderr, done.stderr
    assert not (tmp_path / ".config" / "cmdb" / "config").exists()
    used = cmdb(tmp_path, "jobs", env={"CMDB_URL": url, "CMDB_TOKEN": "x"})
    assert used.returncode == 2 and "https://" in used.stderr


@pytest.mark.parametrize("url", ["https://cmdb.example.com", "http://127.0.0.1:8000",
                                 "http://127.9.9.9/", "http://localhost:8000",
                                 "http://[::1]:80"])  # fmt: skip
def test_https_and_loopback_http_are_taken(url):
    assert config.check_url(url) == url


def test_the_config_folder_is_made_0700_and_one_others_may_write_to_is_refused(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    old = os.umask(0o022)
    try:
        where = config.save(config.Config("https://cmdb.example.com", "t" * 40), env)
    finally:
        os.umask(old)
    folder = os.path.dirname(where)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert config.load(env).token == "t" * 40

    os.chmod(folder, 0o777)
    with pytest.raises(config.ConfigError, match="chmod 700"):
        config.load(env)
    with pytest.raises(config.ConfigError, match="chmod 700"):
        config.save(config.Config("https://cmdb.example.com", "u" * 40), env)
    with open(where) as kept:  # nothing written through a folder others share
        assert "t" * 40 in kept.read()
    refused = cmdb(tmp_path, "jobs", env=env)
    assert refused.returncode == 2 and "may be written to by others" in refused.stderr
    os.chmod(folder, 0o755)  # others may read and enter; the file's own mode keeps it
    assert config.load(env).token == "t" * 40


def test_a_config_folder_that_is_not_a_folder_of_ones_own_is_refused(tmp_path):
    (tmp_path / "xdg").mkdir()
    (tmp_path / "xdg" / "cmdb").write_text("not a folder")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with pytest.raises(config.ConfigError, match="not a folder of yours"):
        config.load(env)
    # A folder of another user's: made and given away when the test runs as root, else one of
    # root's.
    theirs = "/usr"
    if os.getuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
    with pytest.raises(config.ConfigError, match="not a folder of yours"):
        config.check_folder(str(theirs))
