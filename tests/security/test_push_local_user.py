"""A local user on a managed host may not get root through a push (issue 13, item 2).

The agent is root. The attacks as the review ran them: a link swapped in for the temp file or the
work folder, followed by chmod/chown by path (a stand-in /etc/shadow became 0644 and nobody's,
and the host task said "verified"); a user's ``~/.config -> /etc/cron.d`` followed (a file of the
user's choosing landed in cron.d). Users are played by chown to nobody (65534) in tmp_path; the
races are made deterministic by doing the user's move at the moment it would win, as nobody in a
forked child (as_user) where what the kernel lets a user do is the point.
"""

import contextlib
import grp
import logging
import os
import signal
import stat
import struct
import subprocess
import traceback
from pathlib import Path

import pytest

from cmdb.files.uploads import pack_tree
from cmdb.jobs.choices import HostTaskStateChoices as State
from tests.support.blobs import SMALL, crafted_archive, make_tree, member, upload
from tests.support.cli import ID_LINE, wait_job
from tests.support.factories import make_host
from tests.support.fleet import rooted_agents
from wire.blobs import put_blob
from workers import fdpath, placing
from workers.fdpath import NEW_DIR_MODE
from workers.placing import NEW_FILE_MODE, receive_file, receive_tree, send_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays a local user with chown: root")

NOBODY = 65534
SHADOW = b"root:$6$secret:19000:0:99999:7:::\n"
IP = "127.0.1.84"


def folder(path, uid=0, gid=0, mode=0o755):
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def stand_in_shadow(path, data=SHADOW):
    """A file a user must never get: root's, 0640."""
    path.write_bytes(data)
    os.chown(path, 0, 0)
    path.chmod(0o640)
    return path


def untouched(path, data=SHADOW) -> bool:
    st = path.lstat()
    return (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, path.read_bytes()) == (
        0o640, 0, 0, data)  # fmt: skip


def as_user(cwd, step, uid=NOBODY, gid=NOBODY) -> bool:
    """Run ``step`` as a local user, in a forked child that drops root in ``cwd`` (so that the
    steps need no search right on tmp_path's 0700 ancestors); whether it succeeded."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(cwd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            step()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@contextlib.contextmanager
def no_longer_than(seconds):
    """Fail, rather than hang the suite, if the agent waits on a fifo."""

    def hung(*_):
        raise AssertionError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def posix_acl(*entries) -> bytes:
    """A system.posix_acl_access value, as the kernel stores it: (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


ANY = 0xFFFFFFFF  # the id of the entries that have none (owner, owning group, mask, other)


def tree_manifest(store, tmp_path):
    archive, files = pack_tree(str(make_tree(tmp_path / "release")), spool_dir=str(tmp_path))
    with archive:
        return put_blob(store, archive, chunk_size=SMALL), files


# --- Folders on the way that a user can change ------------------------------------------------


@pytest.mark.parametrize("rooted", [True, False], ids=["agent-root", "slash"])
def test_a_users_link_to_cron_d_gets_nothing_into_cron_d(store, tmp_path, rooted):
    """~/.config -> /etc/cron.d: refused for the home folder; allowed, refused for the link."""
    root = folder(tmp_path / "host") if rooted else None
    base = tmp_path / "host" if rooted else tmp_path
    cron = folder(base / "etc" / "cron.d")
    home = folder(base / "home" / "alice", NOBODY, NOBODY)
    (home / ".config").symlink_to("/etc/cron.d" if rooted else cron)
    os.lchown(home / ".config", NOBODY, NOBODY)
    dest = "/home/alice/.config/backup" if rooted else str(home / ".config" / "backup")
    manifest = upload(store, b"* * * * * root /home/alice/run-me\n")

    refused = receive_file(store, manifest, dest, mode=0o644, owner="root", root=root and str(root))

    assert refused["outcome"] == "failed"
    assert refused["detail"] == (
        f"refused: the folder {home} can be changed by user nobody (uid 65534), who owns it: they "
        "could swap what this push writes there for a link to any file on the host (/etc/shadow, "
        "say) and so take that file over as root. Push to a folder that only root can change or, "
        "if that is fine, allow it: `manage.py push --allow-unsafe-parents`, or "
        "allow_unsafe_parents in the API"
    )
    assert os.listdir(cron) == []

    allowed = receive_file(store, manifest, dest, mode=0o644, owner="root",
                           root=root and str(root), allow_unsafe_parents=True)  # fmt: skip

    assert allowed["outcome"] == "failed"
    assert allowed["detail"].startswith(
        f"refused: {home / '.config'} is a symbolic link in a folder that can be changed by user "
        "nobody (uid 65534), who owns it, and a push never follows such a link, even with "
        "allow_unsafe_parents"
    )
    assert os.listdir(cron) == []
    assert sorted(os.listdir(home)) == [".config"]


@pytest.mark.parametrize(
    "uid, gid, mode, who",
    [
        (NOBODY, 0, 0o755, "user nobody (uid 65534), who owns it"),
        (0, NOBODY, 0o775, "the members of group nogroup (gid 65534), as it is group-writable"),
        (0, 0, 0o777, "every user, as it is world-writable"),
    ],
    ids=["owner", "group", "world"],
)
def test_an_ancestor_a_user_can_change_is_refused_and_nothing_is_written(
    store, tmp_path, uid, gid, mode, who
):
    root = folder(tmp_path / "host")
    srv = folder(root / "srv", uid, gid, mode)  # above the destination's own folder
    app = folder(srv / "app")
    manifest = upload(store, b"port = 80\n")

    outcome = receive_file(store, manifest, "/srv/app/conf/app.conf", root=str(root))

    assert outcome["outcome"] == "failed"
    assert outcome["detail"].startswith(f"refused: the folder {srv} can be changed by {who}: ")
    assert os.listdir(app) == []  # not even the folder conf
    tree, files = tree_manifest(store, tmp_path)
    refused = receive_tree(store, tree, "/srv/app/release", files, root=str(root))
    assert refused["outcome"] == "failed" and refused["detail"] == outcome["detail"]
    assert os.listdir(app) == []


def test_a_sticky_folder_like_tmp_is_fine_and_the_root_itself_is_checked(store, tmp_path):
    manifest = upload(store, b"x\n")
    root = folder(tmp_path / "host")
    folder(root / "tmp", mode=0o1777)
    assert receive_file(store, manifest, "/tmp/x", root=str(root))["outcome"] == "verified"

    os.chown(root, NOBODY, NOBODY)
    outcome = receive_file(store, manifest, "/etc/x", root=str(root))
    assert outcome["detail"].startswith(f"refused: the folder {root} can be changed by user nobody")
    assert not (root / "etc").exists()


def test_folders_above_the_agent_root_are_not_the_agents_to_judge(store, tmp_path):
    """Several agents share a machine in the tests and the demo: above its root is theirs."""
    outer = folder(tmp_path / "outer", NOBODY, NOBODY)
    root = folder(outer / "host")
    outcome = receive_file(store, upload(store, b"x\n"), "/etc/app.conf", root=str(root))
    assert outcome["outcome"] == "verified", outcome


def test_an_equal_file_is_not_skipped_past_the_check(store, tmp_path):
    """The "already equal" path looks at the folders too: no chmod or chown done there."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    target = stand_in_shadow(home / "app.conf")

    outcome = receive_file(store, upload(store, SHADOW), str(target), mode=0o644, owner="nobody")

    assert outcome["outcome"] == "failed" and "refused: the folder" in outcome["detail"]
    assert untouched(target)


# --- Allowed: the user may change the folder, but still gets nothing of root's -----------------


def test_allowed_a_link_at_the_destination_is_replaced_never_followed(store, tmp_path):
    shadow = stand_in_shadow(tmp_path / "shadow")
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    for content in (SHADOW, b"different\n"):  # equal (the skip path), and not
        (home / "app.conf").unlink(missing_ok=True)
        (home / "app.conf").symlink_to(shadow)

        outcome = receive_file(store, upload(store, content), str(home / "app.conf"), mode=0o644,
                               owner="nobody:nogroup", allow_unsafe_parents=True)  # fmt: skip

        assert outcome["outcome"] == "verified", outcome
        assert untouched(shadow)
        placed = (home / "app.conf").lstat()
        assert stat.S_ISREG(placed.st_mode) and (placed.st_uid, placed.st_mode & 0o777) == (
            NOBODY, 0o644)  # fmt: skip


def test_allowed_a_temp_file_swapped_for_a_link_is_not_chmodded_through(
    store, tmp_path, monkeypatch
):
    """The review's attack: while the blob downloads, the user swaps the temp file for a link
    to /etc/shadow; chmod and chown by path then made it 0644 and the user's."""
    shadow = stand_in_shadow(tmp_path / "shadow")
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    real_get_blob = placing.get_blob

    def swapped_while_downloading(client, manifest, f):
        written = real_get_blob(client, manifest, f)
        (temp,) = [p for p in home.iterdir() if p.name.startswith(".app.conf.cmdb-")]
        temp.unlink()
        temp.symlink_to(shadow)
        return written

    monkeypatch.setattr(placing, "get_blob", swapped_while_downloading)
    outcome = receive_file(store, upload(store, b"x"), str(home / "app.conf"), mode=0o644,
                           owner="nobody:nogroup", allow_unsafe_parents=True)  # fmt: skip

    assert untouched(shadow)
    assert outcome == {"outcome": "failed", "detail": (
        f"{home / 'app.conf'} was swapped for something else as the push put it in place: "
        "what is there is not what was pushed")}  # fmt: skip


def test_allowed_a_work_folder_swapped_for_a_link_gets_nothing_through_it(
    store, tmp_path, monkeypatch
):
    """The same for a folder: the work folder swapped for a link to a folder of root's just
    after it is made; extraction, chown and chmod go to the open folder."""
    manifest, files = tree_manifest(store, tmp_path)
    roots_own = folder(tmp_path / "cron.d", mode=0o700)
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    real_make_temp_dir = fdpath.make_temp_dir

    def swapped_before_unpacking(*args, **kwargs):
        fd, name = real_make_temp_dir(*args, **kwargs)
        (home / name).rename(home / "moved-away")
        (home / name).symlink_to(roots_own)
        return fd, name

    monkeypatch.setattr(fdpath, "make_temp_dir", swapped_before_unpacking)
    outcome = receive_tree(store, manifest, str(home / "site"), files, mode=0o755,
                           owner="nobody:nogroup", allow_unsafe_parents=True)  # fmt: skip

    st = roots_own.stat()
    assert (os.listdir(roots_own), stat.S_IMODE(st.st_mode), st.st_uid) == ([], 0o700, 0)
    assert outcome["outcome"] == "failed" and "was swapped for something else" in outcome["detail"]
    assert (home / "moved-away" / "conf" / "app.conf").read_text() == "port = 80\n"


# --- Temp names: created, never opened ---------------------------------------------------------


def test_a_link_waiting_at_the_temp_name_is_never_opened(store, tmp_path, monkeypatch):
    """Temp names are random; here the user guessed one (O_EXCL | O_NOFOLLOW: another is
    tried), then all of them (the push fails, the stand-in is untouched)."""
    shadow = stand_in_shadow(tmp_path / "shadow")
    etc = folder(tmp_path / "etc")
    (etc / ".app.conf.cmdb-guessed").symlink_to(shadow)
    (etc / ".site.cmdb-guessed").symlink_to(tmp_path)
    names = iter(["guessed", "free1", "guessed", "free2", "guessed", "free3"])
    monkeypatch.setattr(fdpath, "temp_suffix", lambda: next(names))

    outcome = receive_file(store, upload(store, b"x"), str(etc / "app.conf"), mode=0o644)
    assert outcome["outcome"] == "verified", outcome
    manifest, files = tree_manifest(store, tmp_path)  # a spool file, then a work folder
    assert receive_tree(store, manifest, str(etc / "site"), files)["outcome"] == "verified"

    assert untouched(shadow) and (etc / "app.conf").read_bytes() == b"x"
    assert sorted(os.listdir(etc)) == [".app.conf.cmdb-guessed", ".site.cmdb-guessed",
                                       "app.conf", "site"]  # fmt: skip
    monkeypatch.setattr(fdpath, "temp_suffix", lambda: "guessed")
    outcome = receive_file(store, upload(store, b"y"), str(etc / "app.conf"), mode=0o644)
    assert outcome == {
        "outcome": "failed",
        "detail": "no free temporary name beside app.conf after 100 tries",
    }
    assert untouched(shadow) and (etc / "app.conf").read_bytes() == b"x"


# --- The "already equal, skip" path ------------------------------------------------------------


def test_an_equal_link_or_hard_link_is_replaced_not_chmodded(store, tmp_path):
    shadow = stand_in_shadow(tmp_path / "shadow")
    etc = folder(tmp_path / "etc")
    (etc / "soft").symlink_to(shadow)
    os.link(shadow, etc / "hard")
    manifest = upload(store, SHADOW)

    for name in ("soft", "hard"):
        outcome = receive_file(store, manifest, str(etc / name), mode=0o644, owner="nobody")
        assert outcome["outcome"] == "verified", outcome
        assert untouched(shadow)
        assert (etc / name).stat().st_ino != shadow.stat().st_ino

    tree = folder(etc / "site")
    (tree / "shadow").symlink_to(shadow)  # a listed file that is a link: never equal
    archive = crafted_archive(store, [(member("shadow"), SHADOW)])
    assert receive_tree(store, archive, str(tree), {"shadow": manifest["sha256"]},
                        owner="nobody")["outcome"] == "verified"  # fmt: skip
    assert untouched(shadow)


def test_a_file_its_old_owner_held_open_is_replaced_when_it_becomes_roots(store, tmp_path):
    """A user who owned an equal file may hold it open for writing: chown to root on the skip
    path would leave them writing a root-owned script. A new copy is one nobody holds."""
    script = b"#!/bin/sh\necho backup\n"
    target = tmp_path / "backup.sh"
    target.write_bytes(script)
    os.chown(target, NOBODY, NOBODY)
    with open(target, "r+b") as held:
        outcome = receive_file(store, upload(store, script), str(target), mode=0o755,
                               owner="root:root")  # fmt: skip
        held.write(b"#!/bin/sh\ncp /bin/sh /tmp/x; chmod u+s /tmp/x\n")

    assert outcome["outcome"] == "verified", outcome
    st = target.stat()
    assert (target.read_bytes(), st.st_uid, stat.S_IMODE(st.st_mode)) == (script, 0, 0o755)
    # Its owner unchanged, or root's already: skipped as before.
    again = receive_file(store, upload(store, script), str(target), mode=0o755)
    assert again["outcome"] == "skipped"


def test_a_tree_its_old_owner_could_change_is_replaced_when_it_becomes_roots(store, tmp_path):
    manifest, files = tree_manifest(store, tmp_path)
    dest = tmp_path / "srv" / "app"
    assert receive_tree(store, manifest, str(dest), files, owner="nobody")["outcome"] == "verified"
    old = dest.stat().st_ino

    outcome = receive_tree(store, manifest, str(dest), files, owner="root:root")

    assert outcome["outcome"] == "verified", outcome
    assert dest.stat().st_ino != old
    assert {p.lstat().st_uid for p in [dest, *dest.rglob("*")]} == {0}
    assert receive_tree(store, manifest, str(dest), files, owner="root")["outcome"] == "skipped"


# --- Links only root could have made: followed, as before --------------------------------------


def test_links_root_made_are_followed_and_walked_the_same_way(store, tmp_path):
    root = folder(tmp_path / "host")
    folder(root / "usr" / "lib")
    folder(root / "run")
    (root / "lib").symlink_to("usr/lib")  # a merged /usr
    folder(root / "var")
    (root / "var" / "run").symlink_to("/run")  # absolute: the agent's "/" is its root
    manifest = upload(store, b"[Unit]\n")

    unit = receive_file(store, manifest, "/lib/systemd/system/app.service", root=str(root))
    pid = receive_file(store, manifest, "/var/run/app/pid", root=str(root))

    assert unit["outcome"] == pid["outcome"] == "verified", (unit, pid)
    assert (root / "usr/lib/systemd/system/app.service").read_bytes() == b"[Unit]\n"
    assert (root / "run/app/pid").read_bytes() == b"[Unit]\n"
    assert (root / "lib").is_symlink() and (root / "var" / "run").is_symlink()

    # ... but not what leads to a folder a user can change, nor a user's link in /tmp.
    folder(root / "usr" / "lib" / "systemd", NOBODY, NOBODY)
    refused = receive_file(store, manifest, "/lib/systemd/system/app.service", root=str(root))
    assert f"the folder {root}/usr/lib/systemd can be changed by user nobody" in refused["detail"]
    folder(root / "tmp", mode=0o1777)
    (root / "tmp" / "x").symlink_to("/etc")
    os.lchown(root / "tmp" / "x", NOBODY, NOBODY)
    for allow in (False, True):
        link = receive_file(store, manifest, "/tmp/x/passwd", root=str(root),
                            allow_unsafe_parents=allow)  # fmt: skip
        assert link["detail"].startswith(
            f"refused: {root}/tmp/x is a symbolic link owned by user nobody (uid 65534), and a "
            "push never follows such a link"
        )
    assert not (root / "etc").exists()


def test_a_link_loop_is_refused(store, tmp_path):
    root = folder(tmp_path / "host")
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    outcome = receive_file(store, upload(store, b"x"), "/a/x", root=str(root))
    assert outcome == {
        "outcome": "failed",
        "detail": f"refused: more than 40 symbolic links on the way to {root}/a/x",
    }


def test_a_fetch_still_follows_the_operators_links(store, tmp_path):
    """/etc/alternatives: fetching a path the operator named through links is legitimate."""
    root = folder(tmp_path / "host")
    folder(root / "etc" / "alternatives")
    (root / "etc" / "alternatives" / "editor").write_text("vim\n")
    folder(root / "usr")
    (root / "usr" / "bin").symlink_to("../etc/alternatives")
    assert send_file(store, "/usr/bin/editor", root=str(root))["outcome"] == "sent"


# --- A name a user made first (sticky /tmp): the push takes nothing over from it ---------------


def sticky_tmp(tmp_path):
    return folder(tmp_path / "tmp", mode=0o1777)


def test_a_users_file_at_the_name_in_tmp_lends_the_new_file_neither_owner_nor_mode(store, tmp_path):
    """The review's attack: the user makes /tmp/run.sh first (0666, or setuid 04777 of theirs);
    the push took over their owner and mode, so they could append to root's script."""
    tmp = sticky_tmp(tmp_path)
    assert as_user(tmp, lambda: (open("run.sh", "w").close(), os.chmod("run.sh", 0o666)))
    assert as_user(tmp, lambda: (open("r2.sh", "w").close(), os.chmod("r2.sh", 0o4777)))
    manifest = upload(store, b"#!/bin/sh\necho maintenance\n")

    asked = receive_file(store, manifest, str(tmp / "run.sh"), mode=0o755)
    defaults = receive_file(store, manifest, str(tmp / "r2.sh"))

    assert asked["outcome"] == defaults["outcome"] == "verified", (asked, defaults)
    for name, mode in (("run.sh", 0o755), ("r2.sh", NEW_FILE_MODE)):
        st = (tmp / name).lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode), name

    def append():
        with open("run.sh", "ab") as f:
            f.write(b"cp /bin/sh /tmp/x; chmod u+s /tmp/x\n")

    assert not as_user(tmp, append)
    assert (tmp / "run.sh").read_bytes() == b"#!/bin/sh\necho maintenance\n"


def test_an_equal_file_a_user_made_first_is_replaced_not_kept(store, tmp_path):
    """Skipped before, and so still theirs, held open to be written after the push."""
    tmp = sticky_tmp(tmp_path)
    script = b"#!/bin/sh\necho maintenance\n"
    assert as_user(tmp, lambda: Path("run.sh").write_bytes(script))
    with open(tmp / "run.sh", "r+b") as held:  # as the user would hold it
        outcome = receive_file(store, upload(store, script), str(tmp / "run.sh"), mode=0o755)
        held.write(b"#!/bin/sh\nid > /tmp/pwned\n")

    assert outcome["outcome"] == "verified", outcome
    st = (tmp / "run.sh").lstat()
    assert ((tmp / "run.sh").read_bytes(), st.st_uid, stat.S_IMODE(st.st_mode)) == (
        script, 0, 0o755)  # fmt: skip


def test_a_users_folder_at_the_name_in_tmp_is_replaced_by_one_of_roots(store, tmp_path):
    """The tree took over the user's folder as its top: they could then swap bin/run."""
    tmp = sticky_tmp(tmp_path)
    assert as_user(tmp, lambda: os.mkdir("site", 0o755))
    manifest, files = tree_manifest(store, tmp_path)

    outcome = receive_tree(store, manifest, str(tmp / "site"), files)

    assert outcome["outcome"] == "verified", outcome
    site = tmp / "site"
    assert {p.lstat().st_uid for p in [site, *site.rglob("*")]} == {0}
    assert stat.S_IMODE(site.stat().st_mode) == NEW_DIR_MODE

    def swap_bin_run():
        os.rename("site/bin", "site/old-bin")

    assert not as_user(tmp, swap_bin_run)


def test_a_hard_link_to_a_setuid_binary_at_the_name_lends_the_push_no_set_id_bit(store, tmp_path):
    """With fs.protected_hardlinks=0 (the kernel's default) a user can link /usr/bin/passwd
    into /tmp; made here by root, as the test host protects hard links."""
    tmp = sticky_tmp(tmp_path)
    passwd = tmp_path / "passwd"
    passwd.write_bytes(b"\x7fELF...")
    passwd.chmod(0o4755)
    os.link(passwd, tmp / "tool")

    outcome = receive_file(store, upload(store, b"#!/bin/sh\n"), str(tmp / "tool"))

    assert outcome["outcome"] == "verified", outcome
    st = (tmp / "tool").lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, NEW_FILE_MODE)
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o4755 and passwd.read_bytes() == b"\x7fELF..."


# --- An equal tree: nothing its owner can swap in is chowned -----------------------------------


def test_an_equal_tree_is_never_chowned_through_what_its_owner_swaps_in(
    store, tmp_path, monkeypatch
):
    """The review's attack on the skip path: the tree's owner renames root's file (here the
    authorized_keys root keeps in their home) over their own link between root's lstat and
    lchown; or unlinks their name of a hard link to /etc/shadow between open and the nlink
    check. Both became theirs."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    shadow = stand_in_shadow(tmp_path / "shadow")
    manifest, files = tree_manifest(store, tmp_path)
    dest = home / "site"
    kw = {"owner": "nobody:nogroup", "allow_unsafe_parents": True}
    assert receive_tree(store, manifest, str(dest), files, **kw)["outcome"] == "verified"
    keys = stand_in_shadow(home / "authorized_keys", b"ssh-ed25519 AAAA admin\n")
    assert as_user(dest, lambda: os.symlink("nowhere", "x"))
    os.link(shadow, dest / "y")  # as with fs.protected_hardlinks=0
    real_lstat_in = fdpath.lstat_in
    moved = []

    def user_moves_roots_file_over_the_link(dir_fd, name):
        st = real_lstat_in(dir_fd, name)
        if name == "x" and st and stat.S_ISLNK(st.st_mode) and not moved:
            moved.append(as_user(dest, lambda: os.rename("../authorized_keys", "x")))
        return st

    monkeypatch.setattr(fdpath, "lstat_in", user_moves_roots_file_over_the_link)
    outcome = receive_tree(store, manifest, str(dest), files, **kw)

    assert moved == [True]
    assert outcome["outcome"] == "skipped", outcome
    assert untouched(dest / "x", b"ssh-ed25519 AAAA admin\n") and untouched(shadow)
    assert not keys.exists()


def test_an_equal_tree_whose_folders_lack_the_owner_asked_for_is_replaced_not_chowned(
    store, tmp_path
):
    """A folder of root's in the owner's tree may have been moved in by them from elsewhere;
    nothing checks a folder as a hash checks a file: a new copy is placed instead."""
    manifest, files = tree_manifest(store, tmp_path)
    dest = tmp_path / "srv" / "site"
    assert receive_tree(store, manifest, str(dest), files, owner="nobody")["outcome"] == "verified"
    os.lchown(dest / "conf", 0, 0)
    old = dest.stat().st_ino

    outcome = receive_tree(store, manifest, str(dest), files, owner="nobody")

    assert outcome["outcome"] == "verified", outcome
    assert dest.stat().st_ino != old
    assert {p.lstat().st_uid for p in [dest, *dest.rglob("*")]} == {NOBODY}
    assert receive_tree(store, manifest, str(dest), files, owner="nobody")["outcome"] == "skipped"


# --- Who else can write a folder: POSIX ACLs, and root's group ---------------------------------


def test_a_posix_acl_that_lets_a_user_write_a_folder_of_roots_is_refused(store, tmp_path):
    """The review's folder: root:root 0775, so root's group alone by its bits, but an ACL entry
    lets nobody write it. Only write that the mask lets through counts."""
    app = folder(tmp_path / "srv" / "app", mode=0o775)
    manifest = upload(store, b"port = 80\n")
    entries = [(1, 7, ANY), (2, 7, NOBODY), (4, 5, ANY), (0x10, 7, ANY), (0x20, 5, ANY)]
    os.setxattr(app, "system.posix_acl_access", posix_acl(*entries))
    assert as_user(app, lambda: open("app.conf", "w").close())  # the ACL does let them
    os.unlink(app / "app.conf")

    outcome = receive_file(store, manifest, str(app / "app.conf"))

    assert outcome["outcome"] == "failed"
    assert outcome["detail"].startswith(
        f"refused: the folder {app} can be changed by user nobody (uid 65534), as a POSIX ACL "
        "lets them write it: they could swap"
    )
    group = [(1, 7, ANY), (4, 5, ANY), (8, 7, NOBODY), (0x10, 7, ANY), (0x20, 5, ANY)]
    os.setxattr(app, "system.posix_acl_access", posix_acl(*group))  # nogroup, not nobody
    detail = receive_file(store, manifest, str(app / "app.conf"))["detail"]
    assert "can be changed by the members of group nogroup (gid 65534), as a POSIX ACL" in detail
    masked = [(1, 7, ANY), (2, 7, NOBODY), (4, 5, ANY), (0x10, 5, ANY), (0x20, 5, ANY)]
    os.setxattr(app, "system.posix_acl_access", posix_acl(*masked))  # the mask allows no write
    app.chmod(0o755)  # the group bits are the mask
    assert receive_file(store, manifest, str(app / "app.conf"))["outcome"] == "verified"


def test_an_acl_the_agent_cannot_read_counts_as_letting_someone_write():
    st = os.stat("/")
    assert fdpath.changers(st, posix_acl((1, 7, ANY), (4, 5, ANY), (0x20, 5, ANY))) is None
    assert fdpath.changers(st, b"\x02\x00\x00\x00\x01\x00") == (
        "whoever its POSIX ACL names (the ACL could not be read: 6 bytes is not a whole number "
        "of ACL entries)"
    )
    assert fdpath.changers(st, struct.pack("<I", 1)).endswith("unknown ACL version 1)")
    assert fdpath.parse_acl(posix_acl((2, 6, 1000))) == [(2, 6, 1000)]


def test_a_folder_of_root_s_group_is_refused_when_others_are_in_that_group(
    store, tmp_path, monkeypatch
):
    srv = folder(tmp_path / "srv", mode=0o775)
    manifest = upload(store, b"x\n")
    assert receive_file(store, manifest, str(srv / "a"))["outcome"] == "verified"
    real_getgrgid = grp.getgrgid
    with_nobody = grp.struct_group(("root", "x", 0, ["nobody"]))
    monkeypatch.setattr(grp, "getgrgid", lambda g: with_nobody if g == 0 else real_getgrgid(g))

    outcome = receive_file(store, manifest, str(srv / "b"))

    assert outcome["detail"].startswith(
        f"refused: the folder {srv} can be changed by the members of group root (gid 0), nobody "
        "among them, as it is group-writable: "
    )


# --- The work folder: the one made, or refused; taken back through what is held ----------------


def test_an_old_tree_renamed_over_the_new_work_folder_is_refused(store, tmp_path, monkeypatch):
    """The review's attack: a tree pushed as root:nogroup 0775 (the user is in nogroup); the
    user renames it over the new, empty work folder before root opens it, then swaps a folder
    in it for a link to cron.d as tarfile unpacks. It was root's, so it passed the check."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    cron = folder(tmp_path / "cron.d", mode=0o700)
    manifest, files = tree_manifest(store, tmp_path)
    first = receive_tree(store, manifest, str(home / "site"), files, mode=0o775,
                         owner="root:nogroup", allow_unsafe_parents=True)  # fmt: skip
    assert first["outcome"] == "verified", first
    real_mkdir, work = os.mkdir, []

    def user_renames_the_old_tree_over_it(name, mode=0o777, *, dir_fd=None):
        real_mkdir(name, mode, dir_fd=dir_fd)
        if isinstance(name, str) and name.startswith(".site.cmdb-"):
            work.append(name)
            assert as_user(home, lambda: (os.rename("site", name), os.mkdir("site")))

    monkeypatch.setattr(os, "mkdir", user_renames_the_old_tree_over_it)
    outcome = receive_tree(store, manifest, str(home / "site"), files, mode=0o755,
                           owner="root", allow_unsafe_parents=True)  # fmt: skip
    monkeypatch.undo()

    assert outcome == {"outcome": "failed", "detail": (
        f"refused: the new folder {home / work[0]} was swapped for another before it was used "
        "(what is there now is a folder of root (uid 0), mode 0775, with 3 entries in it, not an "
        "empty folder of root's alone): someone who can change the folder it is in is racing "
        "this push")}  # fmt: skip
    assert os.listdir(cron) == []


@pytest.mark.parametrize("swapped_for", ["fifo", "link to root's fifo"])
def test_a_work_folder_swapped_for_a_fifo_is_taken_back_without_opening_it(
    store, tmp_path, monkeypatch, swapped_for
):
    """The review's attack on the undo: the user renames the work folder away, puts a fifo (or
    a link to one of root's) at its name and makes the rename into place fail; shutil.rmtree
    then opened the fifo by name and the agent hung."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    roots_fifo = tmp_path / "roots-fifo"
    os.mkfifo(roots_fifo, 0o666)
    manifest, files = tree_manifest(store, tmp_path)
    real_make_temp_dir = fdpath.make_temp_dir

    def user_swaps_the_work_folder(*args, **kwargs):
        fd, work = real_make_temp_dir(*args, **kwargs)

        def swap():
            os.rename(work, "stash")
            if swapped_for == "fifo":
                os.mkfifo(work)
            else:
                os.symlink(roots_fifo, work)
            os.makedirs("site/keep")  # rename(work, "site") now fails: not empty

        assert as_user(home, swap)
        return fd, work

    monkeypatch.setattr(fdpath, "make_temp_dir", user_swaps_the_work_folder)
    with no_longer_than(20):
        outcome = receive_tree(store, manifest, str(home / "site"), files,
                               allow_unsafe_parents=True)  # fmt: skip

    assert outcome["outcome"] == "failed", outcome
    # What was extracted went into the folder held open (now "stash"), and was taken back
    # through it; the user's entry at its old name is left alone.
    assert os.listdir(home / "stash") == []
    assert stat.S_ISFIFO(roots_fifo.lstat().st_mode)
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith(".site.cmdb-")) == [
        "site", "stash"]  # fmt: skip


def test_an_old_tree_is_removed_through_descriptors_and_what_it_leads_to_stays(
    store, tmp_path, monkeypatch, caplog
):
    """The old tree is the user's: a fifo in it, a link to a folder of root's, a folder of
    root's they moved in, and a folder they swap for a link while it is being removed."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    roots_own = folder(tmp_path / "etc", mode=0o755)
    (roots_own / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    site = home / "site"

    def users_tree():
        os.makedirs("site/sub/deeper")
        open("site/sub/deeper/f", "w").close()
        os.mkfifo("site/fifo")
        os.symlink(roots_own, "site/to-etc")

    assert as_user(home, users_tree)
    folder(site / "roots-folder")
    (site / "roots-folder" / "keep").write_text("root's\n")
    real_lstat_in, swapped = fdpath.lstat_in, []

    def user_swaps_sub_for_a_link(dir_fd, name):
        st = real_lstat_in(dir_fd, name)
        if name == "sub" and not swapped:

            def swap():
                (aside,) = [n for n in os.listdir() if n.startswith(".site.cmdb-old-")]
                os.rename(f"{aside}/sub", "sub-moved")
                os.symlink(roots_own, f"{aside}/sub")

            swapped.append(as_user(home, swap))
        return st

    monkeypatch.setattr(fdpath, "lstat_in", user_swaps_sub_for_a_link)
    manifest, files = tree_manifest(store, tmp_path)
    with no_longer_than(20), caplog.at_level(logging.WARNING, logger="workers.placing"):
        outcome = receive_tree(store, manifest, str(site), files, allow_unsafe_parents=True)

    assert swapped == [True]
    assert outcome["outcome"] == "verified", outcome
    assert (roots_own / "passwd").read_text() == "root:x:0:0::/root:/bin/sh\n"
    (aside,) = [p for p in home.iterdir() if p.name.startswith(".site.cmdb-old-")]
    assert sorted(os.listdir(aside)) == ["roots-folder", "sub"]  # all else went
    assert (aside / "roots-folder" / "keep").read_text() == "root's\n"
    assert (aside / "sub").is_symlink() and (home / "sub-moved" / "deeper" / "f").exists()
    assert f"could not remove all of the old folder, now {aside}" in caplog.text


def test_the_spool_of_an_archive_has_no_name_where_a_user_can_see_it(store, tmp_path, monkeypatch):
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    manifest, files = tree_manifest(store, tmp_path)
    real_get_blob, seen = placing.get_blob, []

    def looking_while_downloading(client, manifest, f):
        seen.append(sorted(os.listdir(home)))
        return real_get_blob(client, manifest, f)

    monkeypatch.setattr(placing, "get_blob", looking_while_downloading)
    assert receive_tree(store, manifest, str(home / "site"), files,
                        allow_unsafe_parents=True)["outcome"] == "verified"  # fmt: skip

    ((work,),) = seen
    assert work.startswith(".site.cmdb-") and (home / "site").is_dir()
    assert stat.S_IMODE(os.stat(home / "site").st_mode) == NEW_DIR_MODE


def test_folders_in_a_pushed_tree_get_their_own_mode_whatever_the_umask(store, tmp_path):
    """tarfile's data filter leaves a folder's mode to mkdir: 0777 under the agent's umask 0."""
    manifest, files = tree_manifest(store, tmp_path)
    mask = os.umask(0)
    try:
        outcome = receive_tree(store, manifest, str(tmp_path / "opt" / "app"), files, owner="root")
    finally:
        os.umask(mask)
    assert outcome["outcome"] == "verified", outcome
    app = tmp_path / "opt" / "app"
    folders = [p for p in app.rglob("*") if stat.S_ISDIR(p.lstat().st_mode)]
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in folders}
    assert modes == {"bin": 0o755, "conf": 0o755, "empty": 0o755}, modes


# --- Below a folder a user can change: no link, no other file system ---------------------------


def test_below_a_users_folder_not_even_a_link_of_roots_is_followed(store, tmp_path):
    """A folder of root's in the user's home may have been moved there by them, with root's
    link to /etc in it: the link looked like root's own before."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    etc = folder(tmp_path / "etc")
    sub = folder(home / "sub")
    (sub / "etc").symlink_to(etc)

    outcome = receive_file(store, upload(store, b"x\n"), str(sub / "etc" / "cron.conf"),
                           allow_unsafe_parents=True)  # fmt: skip

    assert outcome["detail"].startswith(
        f"refused: {sub / 'etc'} is a symbolic link below {home}, which can be changed by user "
        "nobody (uid 65534), who owns it, and a push never follows such a link"
    )
    assert os.listdir(etc) == []


@pytest.fixture
def mounted(tmp_path):
    """A file system mounted below a user's folder (as FUSE would let them): tmpfs here."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    point = folder(home / "mnt")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "cmdb-test", str(point)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield home, point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_below_a_users_folder_no_other_file_system_is_entered(store, mounted):
    home, point = mounted
    outcome = receive_file(store, upload(store, b"x\n"), str(point / "x"),
                           allow_unsafe_parents=True)  # fmt: skip
    assert outcome["detail"] == (
        f"refused: {point} is on another file system than {home}, which can be changed by user "
        "nobody (uid 65534), who owns it: a push never enters one below such a folder, even with "
        "allow_unsafe_parents (the user may have mounted it there, with FUSE say, and then "
        "decide what every file in it is)"
    )
    assert os.listdir(point) == []


# --- Reading: fetch and the skip path open nothing but regular files ---------------------------


def test_a_fetch_opens_nothing_but_a_regular_file(store, tmp_path, monkeypatch):
    """Links are followed for the operator, but a device or fifo behind one is never opened
    (opening can do things: a tape rewinds, a fifo waits): O_PATH, then fstat."""
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    roots_fifo = tmp_path / "roots-fifo"
    os.mkfifo(roots_fifo, 0o600)
    (home / "pipe.txt").symlink_to(roots_fifo)
    (home / "dev.txt").symlink_to("/dev/null")
    (home / "notes.txt").write_text("notes\n")
    real_open, opened = os.open, []

    def recording_open(path, flags, *args, **kwargs):
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    for name in ("pipe.txt", "dev.txt"):
        outcome = send_file(store, str(home / name))
        assert outcome == {"outcome": "failed", "detail": f"{home / name} is not a regular file"}
    assert send_file(store, str(home / "notes.txt"))["outcome"] == "sent"
    monkeypatch.undo()

    named = [(path, flags) for path, flags in opened if path.startswith(str(home))]
    assert [os.path.basename(p) for p, _ in named] == ["pipe.txt", "dev.txt", "notes.txt"]
    assert all(flags & os.O_PATH for _, flags in named)


def test_an_equal_size_is_checked_before_anything_is_read(store, tmp_path, monkeypatch):
    """A sparse terabyte at the name in /tmp was hashed through before it was found unequal."""
    target = tmp_path / "app.conf"
    with open(target, "wb") as f:
        f.truncate(1 << 40)
    hashed = []
    monkeypatch.setattr(placing, "_digest", lambda fd: hashed.append(fd) or "0" * 64)

    outcome = receive_file(store, upload(store, b"small\n"), str(target))

    assert outcome["outcome"] == "verified" and hashed == []
    assert target.read_bytes() == b"small\n"


def test_without_proc_reading_fails_closed(store, tmp_path, monkeypatch):
    (tmp_path / "app.conf").write_text("x\n")
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: p != "/proc/self/fd" and real_isdir(p))
    no_proc = (
        "/proc is not mounted: the agent reopens what it checked through /proc/self/fd (so that "
        "what it checked is what it reads), and refuses to read or write anything without it"
    )
    assert send_file(store, str(tmp_path / "app.conf")) == {"outcome": "failed", "detail": no_proc}
    pushed = receive_file(store, upload(store, b"x\n"), str(tmp_path / "app.conf"))
    assert pushed == {"outcome": "failed", "detail": no_proc}


# --- End to end: the refusal reaches the host task ---------------------------------------------


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_a_push_into_a_users_folder_is_refused_by_a_real_agent(fleet, manage, tmp_path):
    source = tmp_path / "backup"
    source.write_text("* * * * * root /home/alice/run-me\n")
    with rooted_agents(fleet, [IP], folder(tmp_path / "roots")) as roots:
        make_host(IP)
        cron = folder(roots[IP] / "etc" / "cron.d")
        home = folder(roots[IP] / "home" / "alice", NOBODY, NOBODY)
        (home / ".config").symlink_to("/etc/cron.d")

        out = manage("push", str(source), "/home/alice/.config/backup", "--hosts", IP,
                     "--owner", "root", "--mode", "0644")  # fmt: skip
        assert out.returncode == 0, out.stderr
        data, code = wait_job(manage, ID_LINE.search(out.stdout).group(1), timeout=120)

    (task,) = data["tasks"]
    assert code == 1 and task["state"] == State.ERROR, task
    assert task["error"].startswith(f"refused: the folder {home} can be changed by user nobody")
    assert "--allow-unsafe-parents" in task["error"]
    assert os.listdir(cron) == [] and os.listdir(home) == [".config"]


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_allow_unsafe_parents_reaches_the_agent_through_the_cli(fleet, manage, tmp_path):
    """The operator's say-so travels in the signed spec: a user's folder is written then, but
    the user's link to cron.d is still not followed."""
    source = tmp_path / "notes"
    source.write_text("hello\n")
    with rooted_agents(fleet, [IP], folder(tmp_path / "roots")) as roots:
        make_host(IP)
        cron = folder(roots[IP] / "etc" / "cron.d")
        home = folder(roots[IP] / "home" / "alice", NOBODY, NOBODY)
        (home / ".config").symlink_to("/etc/cron.d")

        runs = {}
        for dest in ("/home/alice/notes", "/home/alice/.config/notes"):
            out = manage("push", str(source), dest, "--hosts", IP, "--allow-unsafe-parents")
            assert out.returncode == 0, out.stderr
            runs[dest] = wait_job(manage, ID_LINE.search(out.stdout).group(1), timeout=120)

    (written,) = runs["/home/alice/notes"][0]["tasks"]
    assert written["state"] == State.OK and (home / "notes").read_text() == "hello\n"
    (through_link,) = runs["/home/alice/.config/notes"][0]["tasks"]
    assert through_link["state"] == State.ERROR and os.listdir(cron) == []
