"""The placing script of the SSH mode, run by the real /bin/sh on this machine as the gateway
runs it on a host (no sshd needed here: test_ssh_mode covers the way there), and the decisions
gateway.placing makes from what it says."""

import asyncio
import contextlib
import hashlib
import io
import os
import pwd
import subprocess
import tarfile
import types

import pytest

from deploy import sshd as sshd_support
from gateway import placing
from gateway.host_script import SCRIPT


def phase(name, kind, dest, *, owner="", temp="", sha="", size=0, mode="", unsafe_ok=False,
          top_owner="", env=None, upload=b""):  # fmt: skip
    argv = [name, kind, str(dest), "1" if unsafe_ok else "0", owner, temp, sha, str(size), mode,
            top_owner]  # fmt: skip
    proc = subprocess.run(["/bin/sh", "-c", SCRIPT, "cmdb-place", *argv], capture_output=True,
                          input=upload, timeout=30, env=env)  # fmt: skip
    return proc.returncode, [line.split("\t") for line in proc.stdout.decode().splitlines()]


def refusal(lines) -> str:
    [fields] = [f for f in lines if f[0] == "E"]
    return placing._worded(fields[1:], placing._Args("file", "", False, "", "f" * 64, 0))


def test_a_folder_a_group_can_change_is_refused_naming_the_group(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: a folder of another group")
    other = pwd.getpwnam(sshd_support.bench_user())
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 0, other.pw_gid)
    shared.chmod(0o775)
    code, lines = phase("look", "file", shared / "app.conf")
    assert code == 2
    assert refusal(lines).startswith(
        f"refused: the folder {shared} can be changed by the members of group "
        f"{other.pw_name} (gid {other.pw_gid}), as it is group-writable"
    )
    assert list(shared.iterdir()) == []
    # Allowed by the operator: looked at, a private folder made; an equal copy never kept.
    code, lines = phase("look", "file", shared / "app.conf", unsafe_ok=True)
    assert code == 0 and ["P", str(shared), "0", "0", "", "", "1"] in lines
    assert placing._look(lines).below_unsafe


def test_a_link_loop_on_the_way_is_refused(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    code, lines = phase("look", "file", tmp_path / "a" / "x")
    assert code == 2 and refusal(lines).startswith("refused: more than 40 symbolic links")


def test_a_sticky_folder_is_fine_and_the_private_folder_is_0700(tmp_path):
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    code, lines = phase("look", "tree", sticky / "site")
    assert code == 0, lines
    look = placing._look(lines)
    made = sticky / look.temp
    assert look.temp.startswith(".site.cmdb-") and made.is_dir()
    assert made.stat().st_mode & 0o7777 == 0o700 and made.stat().st_uid == os.geteuid()


def _prepared(folder, body: bytes, unsafe_ok=False):
    """A file at folder/app.conf ("old"), looked at (``body`` is then the place phase's
    stdin)."""
    dest = folder / "app.conf"
    dest.write_bytes(b"old\n")
    sha = hashlib.sha256(b"new\n").hexdigest()
    code, lines = phase("look", "file", dest, sha=sha, size=4, unsafe_ok=unsafe_ok)
    assert code == 0, lines
    temp = placing._look(lines).temp
    return dest, temp, sha


def test_a_corrupted_upload_is_not_put_in_place_and_the_temp_goes(tmp_path):
    dest, temp, sha = _prepared(tmp_path, b"nex\n")
    code, lines = phase("place", "file", dest, temp=temp, sha=sha, size=4, upload=b"nex\n")
    got = hashlib.sha256(b"nex\n").hexdigest()
    assert code == 2
    assert refusal(lines) == (
        f"sha256 on the host is {got!r}, not {'f' * 64}: not put in place (old one kept)"
    )
    assert dest.read_bytes() == b"old\n" and sorted(os.listdir(tmp_path)) == ["app.conf"]


def test_something_planted_in_the_private_folder_is_refused(tmp_path):
    dest, temp, sha = _prepared(tmp_path, b"new\n")
    (tmp_path / temp / "extra").write_bytes(b"planted\n")
    code, lines = phase("place", "file", dest, temp=temp, sha=sha, size=4)
    assert code == 2 and refusal(lines).startswith(
        f"refused: the new folder {tmp_path}/{temp} was swapped for another"
    )
    assert dest.read_bytes() == b"old\n" and sorted(os.listdir(tmp_path)) == ["app.conf"]


def test_a_verified_upload_is_renamed_in_with_the_old_files_mode_and_group(tmp_path):
    dest, temp, sha = _prepared(tmp_path, b"new\n")
    dest.chmod(0o640)
    gid = pwd.getpwnam(sshd_support.bench_user()).pw_gid if os.geteuid() == 0 else os.getegid()
    os.chown(dest, -1, gid)  # /etc/app.conf root:app 0640: the app must still read the new one
    code, lines = phase("look", "file", dest, sha=sha, size=4)
    look = placing._look(lines)
    os.rmdir(tmp_path / look.temp)
    mode, top_owner = placing._inherited(look, "file", None, None)
    assert mode == 0o640
    code, lines = phase("place", "file", dest, temp=temp, sha=sha, size=4, mode=f"{mode:o}",
                        top_owner=top_owner, upload=b"new\n")  # fmt: skip
    assert code == 0 and ["V"] in lines, lines
    assert dest.read_bytes() == b"new\n" and dest.stat().st_mode & 0o777 == 0o640
    assert dest.stat().st_gid == gid
    assert sorted(os.listdir(tmp_path)) == ["app.conf"]


def test_an_equal_file_with_another_name_is_not_kept(tmp_path):
    dest = tmp_path / "app.conf"
    dest.write_bytes(b"same\n")
    sha = hashlib.sha256(b"same\n").hexdigest()
    _, lines = phase("look", "file", dest, sha=sha, size=5)
    look = placing._look(lines)
    assert placing._equal(look, "file", sha, 5, None, None)
    os.link(dest, tmp_path / "elsewhere")  # a hard link: a new copy, as the agent makes one
    _, lines = phase("look", "file", dest, sha=sha, size=5)
    assert not placing._equal(placing._look(lines), "file", sha, 5, None, None)
    os.unlink(tmp_path / "elsewhere")
    # Others can write it now, and would lose that with 0644 (they might hold it open to
    # write later): a new copy too; kept when they keep it.
    dest.chmod(0o666)
    _, lines = phase("look", "file", dest, sha=sha, size=5)
    assert not placing._equal(placing._look(lines), "file", sha, 5, 0o644, None)
    assert placing._equal(placing._look(lines), "file", sha, 5, None, None)


def _swapping_sha256sum(tmp_path, folder, temp, elsewhere):
    """A PATH with a sha256sum that does what a user who can change ``folder`` may do right
    after the upload was checked: the private folder renamed away, a link to theirs put at its
    name (then the real sha256sum)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sha256sum").write_text(
        "#!/bin/sh\n"
        f"if [ ! -e '{folder}/moved' ]; then mv '{folder}/{temp}' '{folder}/moved' &&"
        f" ln -s '{elsewhere}' '{folder}/{temp}'; fi\n"
        'exec /usr/bin/sha256sum "$@"\n'
    )
    (bin_dir / "sha256sum").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_a_private_folder_swapped_after_the_check_does_not_redirect_the_rename(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # allowed below: others can rename what is in it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "payload").write_bytes(b"evil\n")
    dest, temp, sha = _prepared(shared, b"new\n", unsafe_ok=True)
    env = _swapping_sha256sum(tmp_path, shared, temp, elsewhere)
    phase("place", "file", dest, temp=temp, sha=sha, size=4, unsafe_ok=True, env=env,
          upload=b"new\n")  # fmt: skip
    assert dest.read_bytes() == b"new\n"  # what was checked, never what is at the name later
    assert (elsewhere / "payload").read_bytes() == b"evil\n"


def test_a_private_folder_swapped_after_the_check_gets_no_old_tree(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    site = shared / "site"
    site.mkdir()
    (site / "secret.conf").write_bytes(b"old secret\n")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "new").mkdir(parents=True)
    (elsewhere / "new" / "index.html").write_bytes(b"evil\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("index.html")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"new\n"))
    body = buf.getvalue()
    sha = hashlib.sha256(body).hexdigest()
    code, lines = phase("look", "tree", site, sha=sha, size=len(body), unsafe_ok=True)
    assert code == 0, lines
    temp = placing._look(lines).temp
    env = _swapping_sha256sum(tmp_path, shared, temp, elsewhere)
    phase("place", "tree", site, temp=temp, sha=sha, size=len(body), unsafe_ok=True, env=env,
          upload=body)  # fmt: skip
    assert not (elsewhere / "old").exists()  # root's old tree never moved into their folder
    assert (elsewhere / "new" / "index.html").read_bytes() == b"evil\n"
    assert (site / "index.html").read_bytes() == b"new\n"


class _Reader:
    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)

    async def read(self, n=-1):
        return self.data.read(n)


class _Endless:
    async def read(self, n=-1):
        return b"M\t" + b"0" * (max(n, 3) - 3) + b"\n"


class _LocalConn:
    """Enough of an asyncssh connection to run gateway.placing.push against this machine, the
    commands by the real /bin/sh."""

    def __init__(self, endless=False):
        self.endless = endless

    @contextlib.asynccontextmanager
    async def create_process(self, command, stdin=None, encoding="utf-8"):
        assert encoding is None
        with open(stdin, "rb") if isinstance(stdin, str) else open(os.devnull, "rb") as f:
            ran = subprocess.run(["/bin/sh", "-c", command], stdin=f, capture_output=True,
                                 timeout=30)  # fmt: skip
        proc = types.SimpleNamespace(stdout=_Endless() if self.endless else _Reader(ran.stdout),
                                     stderr=_Reader(ran.stderr), exit_status=ran.returncode,
                                     close=lambda: None)  # fmt: skip

        async def wait():
            return proc

        proc.wait = wait
        yield proc


def test_an_upload_is_not_redirected_by_a_swap_of_the_private_folders_name(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # allowed below: others can rename what is in it
    elsewhere = tmp_path / "elsewhere"  # /etc/cron.d, say
    elsewhere.mkdir()
    dest = shared / "app.conf"
    dest.write_bytes(b"old\n")
    local = tmp_path / "blob"
    local.write_bytes(b"new\n")

    def fetch():  # between the look and the upload, what a user who can change shared may do
        [temp] = [n for n in os.listdir(shared) if n.startswith(".app.conf.cmdb-")]
        os.rename(shared / temp, shared / "moved")
        os.symlink(elsewhere, shared / temp)
        return str(local)

    sha = hashlib.sha256(b"new\n").hexdigest()
    pushed = placing.push(_LocalConn(), fetch, str(dest), tree=False, sha=sha, size=4, mode=None,
                          owner=None, allow_unsafe=True, files=None)  # fmt: skip
    got = asyncio.run(pushed)
    assert os.listdir(elsewhere) == []  # nothing written through the link
    assert got[0] == "failed" and "was swapped for another" in got[1], got
    assert dest.read_bytes() == b"old\n"


def test_an_old_folder_others_can_change_is_not_read(tmp_path):
    # Anything in it may be swapped for a FIFO or a link to /dev/zero between find and
    # sha256sum (the push would hang): it is replaced anyway, so nothing of it is read.
    site = tmp_path / "site"
    (site / "uploads").mkdir(parents=True)
    (site / "uploads").chmod(0o777)
    (site / "index.html").write_bytes(b"same\n")
    code, lines = phase("look", "tree", site)
    assert code == 0, lines
    look = placing._look(lines)
    assert look.not_keepable == 1
    assert [f for f in lines if f[0] == "M"] == []
    assert not placing._equal(look, "tree", "", 0, None, {"index.html": "x"})


def test_a_placed_copy_is_verified_even_if_the_old_one_cannot_all_be_removed(tmp_path):
    # rm -rf --one-file-system says 1 for a mount point or an immutable file in the old tree:
    # the new copy is in place all the same, and the gateway must not say "failed".
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rm").write_text('#!/bin/sh\n/bin/rm "$@"\nexit 1\n')
    (bin_dir / "rm").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    folder = tmp_path / "etc"
    folder.mkdir()
    dest, temp, sha = _prepared(folder, b"new\n")
    code, lines = phase("place", "file", dest, temp=temp, sha=sha, size=4, env=env,
                        upload=b"new\n")  # fmt: skip
    assert code == 0 and ["V"] in lines, lines
    assert dest.read_bytes() == b"new\n"


def test_a_folder_named_dash_is_walked_into_and_cdpath_is_not_followed(tmp_path):
    (tmp_path / "-").mkdir()
    (tmp_path / "decoy" / "-").mkdir(parents=True)
    env = {**os.environ, "CDPATH": str(tmp_path / "decoy")}
    code, lines = phase("look", "file", tmp_path / "-" / "app.conf", env=env)
    assert code == 0, lines
    assert placing._look(lines).parent == f"{tmp_path}/-"


def test_an_archive_with_members_past_a_header_tarfile_cannot_read_is_refused(tmp_path):
    # tarfile stops, quietly, at a header with a bad checksum; GNU tar skips it and unpacks what
    # follows (a device node, a link out): what tar unpacks must be what was checked.
    def header(name, type, data=b"", **attrs):
        info = tarfile.TarInfo(name)
        info.type, info.size = type, len(data)
        for key, value in attrs.items():
            setattr(info, key, value)
        return info.tobuf(format=tarfile.USTAR_FORMAT) + data.ljust(-(-len(data) // 512) * 512,
                                                                    b"\0")  # fmt: skip

    bad = bytearray(header("junk", tarfile.REGTYPE))
    bad[148:156] = b"0000000\0"
    dev = header("dev", tarfile.CHRTYPE, devmajor=1, devminor=5, mode=0o666)
    archive = tmp_path / "site.tar"
    archive.write_bytes(header("a", tarfile.REGTYPE, b"x") + bytes(bad) + dev + b"\0" * 1024)
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["a"]
    with pytest.raises(placing.Refused, match="after the end of the archive"):
        placing.check_archive(str(archive))


def test_keep_below_a_folder_others_can_change_changes_nothing(tmp_path):
    # The gateway keeps nothing there; the script does not either, whatever it is told (a
    # chmod by name there may be a chmod of whatever a link swapped in leads to).
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    dest = shared / "app.conf"
    dest.write_bytes(b"same\n")
    dest.chmod(0o600)
    code, lines = phase("keep", "file", dest, mode="644", unsafe_ok=True)
    assert code == 2 and [f[1] for f in lines if f[0] == "E"] == ["UNSAFE"], lines
    assert dest.stat().st_mode & 0o777 == 0o600


def test_a_host_that_says_too_much_is_refused(tmp_path, monkeypatch):
    # A hostile host streaming lines without end: read up to a limit, not into all memory.
    monkeypatch.setattr(placing, "MAX_OUTPUT", 1 << 20)
    got = asyncio.run(placing.push(_LocalConn(endless=True), None, str(tmp_path / "x"),
                                   tree=False, sha="", size=0, mode=None, owner=None,
                                   allow_unsafe=False, files=None))  # fmt: skip
    assert got == ("failed", placing.E_TOO_MUCH.format(phase="look", limit=1 << 20))
