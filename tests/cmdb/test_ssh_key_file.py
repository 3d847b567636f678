"""The server's SSH client key on disk: made private (0700 folder, 0600 file, a new file under
a random name), and read only when it is this user's own and nobody else's to read."""

import os
import stat

import pytest

from cmdb.hosts import ssh


@pytest.fixture
def key_path(settings, tmp_path):
    path = tmp_path / "made" / "here" / "ssh_key"
    settings.CMDB = {**settings.CMDB, "SSH_KEY": str(path), "SSH_KEY_CREATE": True}
    return path


def test_made_private_and_nothing_left_beside_it(key_path):
    key = ssh.client_key()
    assert key.get_algorithm() == "ssh-ed25519"
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert os.listdir(key_path.parent) == ["ssh_key"]  # the temp file is gone
    assert ssh.client_key().export_public_key() == key.export_public_key()  # made once


def test_a_key_others_may_read_is_refused(key_path):
    ssh.client_key()
    key_path.chmod(0o640)
    with pytest.raises(ssh.SSHKeyError, match="readable by others"):
        ssh.client_key()


def test_a_symlink_is_not_followed(key_path, tmp_path):
    ssh.client_key()
    key_path.rename(tmp_path / "elsewhere")
    key_path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        ssh.client_key()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_key_of_another_user_is_refused(key_path):
    ssh.client_key()
    os.chown(key_path, 65534, 65534)
    with pytest.raises(ssh.SSHKeyError, match="not a file of this user's"):
        ssh.client_key()
