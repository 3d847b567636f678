"""A local user on a managed host may not get root through a push (issue 13, item 2).

The agent is root. The attacks as the review ran them: a link swapped in for the temp file or the
work folder, followed by chmod/chown by path (a stand-in /etc/shadow became 0644 and nobody's,
and the host task said "verified"); a user's ``~/.config -> /etc/cron.d`` followed (a file of the
user's choosing landed in cron.d). Users are played by chown to nobody (65534) in tmp_path; the
races are made deterministic by doing the user's move at the moment it would win.
"""

import os
import stat
import tarfile

import pytest

from cmdb.files.uploads import pack_tree
from cmdb.jobs.choices import HostTaskStateChoices as State
from tests.support.blobs import SMALL, crafted_archive, make_tree, member, upload
from tests.support.cli import ID_LINE, wait_job
from tests.support.factories import make_host
from tests.support.fleet import rooted_agents
from wire.blobs import put_blob
from workers import fdpath, placing
from workers.placing import receive_file, receive_tree, send_file

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
    before the archive is unpacked; extraction, chown and chmod go to the open folder."""
    manifest, files = tree_manifest(store, tmp_path)
    roots_own = folder(tmp_path / "cron.d", mode=0o700)
    home = folder(tmp_path / "home", NOBODY, NOBODY)
    real_extractall = tarfile.TarFile.extractall

    def swapped_before_unpacking(self, path, *args, **kwargs):
        (work,) = [p for p in home.iterdir() if p.name.startswith(".site.cmdb-") and p.is_dir()]
        work.rename(home / "moved-away")
        work.symlink_to(roots_own)
        return real_extractall(self, path, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", swapped_before_unpacking)
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
