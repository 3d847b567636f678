"""workers.placing: what a push puts on a host and what a fetch sends, through a real Redis."""

import io
import os
import tarfile
import tracemalloc

import pytest

from cmdb.files.uploads import pack_tree
from tests.support.blobs import (
    SMALL,
    chunk_key,
    crafted_archive,
    current_umask,
    make_tree,
    member,
    tree_snapshot,
    upload,
)
from wire import blobs
from wire.blobs import BLOB_TTL, ChecksumMismatch, TransferError, UnsafePath, get_blob, put_blob
from workers.placing import NEW_FILE_MODE, receive_file, receive_tree, resolve_under, send_file


def test_round_trip_of_a_file_larger_than_several_chunks(store, tmp_path):
    data = os.urandom(5 * (1 << 20) + (1 << 19))
    manifest = upload(store, data, chunk_size=1 << 20)
    assert manifest["chunks"] == 6 and manifest["size"] == len(data)
    assert manifest["namespace"] == "blob"
    assert 0 < store.ttl(chunk_key(manifest, 0)) <= BLOB_TTL

    outcome = receive_file(store, manifest, str(tmp_path / "big.bin"))

    assert outcome["outcome"] == "verified", outcome
    assert outcome["detail"] == "sha256 verified"
    assert (outcome["sha256"], outcome["bytes"]) == (manifest["sha256"], len(data))
    assert (tmp_path / "big.bin").read_bytes() == data
    assert os.listdir(tmp_path) == ["big.bin"]  # the temp file was renamed, not copied


def test_empty_file_round_trip(store, tmp_path):
    manifest = upload(store, b"")
    assert manifest["chunks"] == 0
    assert receive_file(store, manifest, str(tmp_path / "empty"))["outcome"] == "verified"
    assert (tmp_path / "empty").read_bytes() == b""


def test_corrupted_chunk_is_detected_and_old_file_kept(store, tmp_path):
    data = os.urandom(4 * SMALL)
    manifest = upload(store, data)
    store.set(chunk_key(manifest, 1), os.urandom(SMALL))
    target = tmp_path / "app.conf"
    target.write_bytes(b"old content")

    outcome = receive_file(store, manifest, str(target), mode=0o600)

    assert outcome["outcome"] == "failed"
    assert outcome["detail"].startswith(f"checksum mismatch: expected {manifest['sha256']}")
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["app.conf"]
    with pytest.raises(ChecksumMismatch):
        get_blob(store, manifest, io.BytesIO())


def test_missing_chunk_is_a_clear_failure(store, tmp_path):
    manifest = upload(store, os.urandom(3 * SMALL))
    store.delete(chunk_key(manifest, 2))

    outcome = receive_file(store, manifest, str(tmp_path / "new" / "dir" / "f"))

    assert outcome["outcome"] == "failed"
    assert f"chunk 2 of {manifest['sha256']} expired or missing" in outcome["detail"]
    assert os.listdir(tmp_path) == []  # no temp file, and the parents it made are gone again


def test_malformed_manifest_is_a_failure_not_a_crash(store, tmp_path):
    bad = {"sha256": "../../x", "size": 1, "chunk_size": 1, "chunks": 1, "namespace": "blob"}
    outcome = receive_file(store, bad, str(tmp_path / "f"))
    assert outcome["outcome"] == "failed" and "not a valid blob manifest" in outcome["detail"]
    with pytest.raises(TransferError):
        get_blob(store, {"sha256": "0" * 64}, io.BytesIO())


def test_equal_target_is_skipped_without_download(store, tmp_path):
    data = os.urandom(2 * SMALL)
    manifest = upload(store, data)
    store.flushall()  # nothing left to download: only skipping can succeed
    target = tmp_path / "f"
    target.write_bytes(data)
    target.chmod(0o600)

    outcome = receive_file(store, manifest, str(target), mode=0o640)

    assert outcome == {"outcome": "skipped", "detail": "already equal",
                       "sha256": manifest["sha256"], "bytes": len(data)}  # fmt: skip
    assert target.stat().st_mode & 0o7777 == 0o640


def test_mode_is_applied(store, tmp_path):
    manifest = upload(store, b"#!/bin/sh\necho hi\n")
    assert receive_file(store, manifest, str(tmp_path / "run"), mode=0o750)["outcome"] == (
        "verified"
    )
    assert (tmp_path / "run").stat().st_mode & 0o7777 == 0o750
    # No mode given: a new file is readable by its service (not mkstemp's 0600) ...
    receive_file(store, manifest, str(tmp_path / "plain"))
    assert (tmp_path / "plain").stat().st_mode & 0o7777 == NEW_FILE_MODE
    # ... and a replaced file keeps the mode it had.
    receive_file(store, upload(store, b"new"), str(tmp_path / "run"))
    assert (tmp_path / "run").stat().st_mode & 0o7777 == 0o750


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_is_applied_when_root_and_unknown_owner_fails_untouched(store, tmp_path):
    manifest = upload(store, b"data")
    target = tmp_path / "owned"
    outcome = receive_file(store, manifest, str(target), owner="nobody:nogroup")
    assert outcome["outcome"] == "verified", outcome
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)

    # A re-run that finds it equal sets the owner again, and says skipped.
    os.chown(target, 0, 0)
    again = receive_file(store, manifest, str(target), owner="nobody:nogroup")
    assert again["outcome"] == "skipped", again
    assert target.stat().st_uid == 65534

    outcome = receive_file(store, upload(store, b"other"), str(target), owner="no-such-user")
    assert outcome["outcome"] == "failed" and "no-such-user" in outcome["detail"]
    assert target.read_bytes() == b"data"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_owner_of_a_folder_owns_everything_in_it(store, tmp_path):
    source = make_tree(tmp_path / "release")
    archive, files = pack_tree(str(source), spool_dir=str(tmp_path))
    with archive:
        manifest = put_blob(store, archive, chunk_size=SMALL)
    dest = tmp_path / "host" / "srv" / "app"

    outcome = receive_tree(store, manifest, str(dest), files, owner="nobody:nogroup")

    assert outcome["outcome"] == "verified", outcome
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [dest, *dest.rglob("*")]}
    assert owners == {(65534, 65534)}
    # The links themselves, not what they point to.
    assert (dest / "current").is_symlink()
    # A re-run that finds the files equal still applies the owner asked for.
    os.lchown(dest / "conf" / "app.conf", 0, 0)
    again = receive_tree(store, manifest, str(dest), files, owner="nobody:nogroup")
    assert again["outcome"] == "skipped"
    assert (dest / "conf" / "app.conf").stat().st_uid == 65534
    # The owner may have put links to files outside in the meantime: never followed.
    outside = tmp_path / "shadow"
    outside.write_text("secret")
    os.link(outside, dest / "hard")
    (dest / "soft").symlink_to(outside)
    assert (
        receive_tree(store, manifest, str(dest), files, owner="nobody:nogroup")["outcome"]
        == "skipped"
    )
    assert outside.stat().st_uid == 0


def test_parent_directories_are_created(store, tmp_path):
    manifest = upload(store, b"hello")
    target = tmp_path / "etc" / "app" / "conf.d" / "x.conf"

    assert receive_file(store, manifest, str(target))["outcome"] == "verified"
    assert target.read_bytes() == b"hello"
    assert (tmp_path / "etc").stat().st_mode & 0o777 == 0o755 & ~current_umask()


def test_target_that_is_a_directory_fails_with_the_reason(store, tmp_path):
    (tmp_path / "d").mkdir()
    outcome = receive_file(store, upload(store, b"x"), str(tmp_path / "d"))
    assert outcome == {"outcome": "failed", "detail": f"{tmp_path / 'd'} is a directory"}


def test_resolve_under_refuses_escapes_and_relative_paths(tmp_path):
    root = str(tmp_path / "agent1")
    assert resolve_under(root, "/etc/app.conf") == tmp_path / "agent1" / "etc" / "app.conf"
    assert resolve_under(root, "/etc/../opt/x") == tmp_path / "agent1" / "opt" / "x"
    assert str(resolve_under(None, "/etc/app.conf")) == "/etc/app.conf"
    for path in ("/../../etc/passwd", "/etc/../../x", "/../agent1-other/x"):
        with pytest.raises(UnsafePath, match="outside the agent root"):
            resolve_under(root, path)
    for path in ("etc/app.conf", "./x", "", "/etc/x\0y"):
        with pytest.raises(UnsafePath, match="not an absolute path"):
            resolve_under(root, path)
        with pytest.raises(UnsafePath):
            resolve_under(None, path)
    for root_, path in ((root, "/"), (root, "/etc/.."), (None, "/")):
        with pytest.raises(UnsafePath, match="root folder itself"):
            resolve_under(root_, path)
    outcome = receive_file(None, {}, "/../outside", root=root)
    assert outcome["outcome"] == "failed" and "outside the agent root" in outcome["detail"]


def test_folder_round_trip_and_skip_on_rerun(store, tmp_path):
    source = make_tree(tmp_path / "release")
    archive, files = pack_tree(str(source), spool_dir=str(tmp_path))
    with archive:
        manifest = put_blob(store, archive, chunk_size=SMALL)
    assert sorted(files) == ["bin/run", "conf/app.conf"]
    root = tmp_path / "host1"

    outcome = receive_tree(store, manifest, "/opt/app/42", files, mode=0o750, root=str(root))

    dest = root / "opt" / "app" / "42"
    assert outcome["outcome"] == "verified", outcome
    assert tree_snapshot(dest) == tree_snapshot(source)
    assert dest.stat().st_mode & 0o7777 == 0o750
    assert (dest / "bin" / "run").stat().st_mode & 0o111
    assert os.listdir(dest.parent) == ["42"]  # no spool, work or old folders left behind

    again = receive_tree(store, manifest, "/opt/app/42", files, root=str(root))
    assert again["outcome"] == "skipped"

    # A changed file means a new copy; extra files in the old one go with it.
    (dest / "conf" / "app.conf").write_text("port = 81\n")
    (dest / "stray").write_text("x")
    assert receive_tree(store, manifest, "/opt/app/42", files, root=str(root))["outcome"] == (
        "verified"
    )
    assert tree_snapshot(dest) == tree_snapshot(source)
    assert os.listdir(dest.parent) == ["42"]


def test_archive_with_dotdot_member_is_refused_and_nothing_written(store, tmp_path):
    manifest = crafted_archive(store, [(member("ok.txt"), b"fine"), (member("../evil"), b"x")])
    before = tree_snapshot(tmp_path)

    outcome = receive_tree(store, manifest, "/srv/app", {}, root=str(tmp_path / "root"))

    assert outcome["outcome"] == "failed"
    assert outcome["detail"].startswith("unsafe archive member '../evil': ")
    assert tree_snapshot(tmp_path) == before  # not even the parent folders it would have made


def test_archive_with_symlink_pointing_outside_is_refused(store, tmp_path):
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    members = [(member("link", tarfile.SYMTYPE, "../../outside"), None)]
    outcome = receive_tree(store, crafted_archive(store, members), "/srv/app", {}, root=str(root))
    assert outcome["outcome"] == "failed"
    assert "unsafe archive member 'link'" in outcome["detail"]
    assert os.listdir(root / "srv") == []


def test_symlink_chain_that_escapes_is_refused(store, tmp_path):
    # Each link alone looks inside; followed through one another they leave the folder.
    members = [
        (member("x/y", tarfile.DIRTYPE), None),
        (member("x/y/s", tarfile.SYMTYPE, "../../t"), None),
        (member("t", tarfile.DIRTYPE), None),
        (member("escape", tarfile.SYMTYPE, "x/y/s/../../../.."), None),
    ]
    outcome = receive_tree(store, crafted_archive(store, members), str(tmp_path / "d"), {})
    assert outcome["detail"].startswith("unsafe archive member 'escape': symlink target")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "members, why",
    [
        ([(member("a"), b"x"), (member("b", tarfile.LNKTYPE, "a"), None)], "hard link"),
        ([(member("fifo", tarfile.FIFOTYPE), None)], "special file"),
        ([(member("dev", tarfile.CHRTYPE), None)], "special file"),
        ([(member("l", tarfile.SYMTYPE, "sub"), None), (member("l/f"), b"x")], "through the"),
        ([(member("a"), b"x"), (member("./a"), b"y")], "appears twice"),
        ([(member("l", tarfile.SYMTYPE, "l"), None)], "too many levels"),
    ],
)
def test_other_unsafe_members_are_refused(store, tmp_path, members, why):
    outcome = receive_tree(store, crafted_archive(store, members), str(tmp_path / "d"), {})
    assert outcome["outcome"] == "failed" and why in outcome["detail"], outcome
    assert os.listdir(tmp_path) == []


def test_absolute_member_is_refused(store, tmp_path):
    manifest = crafted_archive(store, [(member(str(tmp_path / "abs-evil")), b"x")])
    outcome = receive_tree(store, manifest, str(tmp_path / "d"), {})
    assert outcome["outcome"] == "failed"
    assert outcome["detail"] == f"unsafe archive member '{tmp_path}/abs-evil': absolute path"
    assert os.listdir(tmp_path) == []


def test_corrupted_archive_leaves_the_old_folder(store, tmp_path):
    source = make_tree(tmp_path / "src")
    archive, files = pack_tree(str(source))
    with archive:
        manifest = put_blob(store, archive, chunk_size=SMALL)
    old = tmp_path / "dest"
    old.mkdir()
    (old / "keep").write_text("old")
    store.set(chunk_key(manifest, 0), b"garbage")

    outcome = receive_tree(store, manifest, str(old), files)

    assert outcome["outcome"] == "failed" and "checksum mismatch" in outcome["detail"]
    assert tree_snapshot(old) == {"keep": b"old"}
    assert sorted(os.listdir(tmp_path)) == ["dest", "src"]


def test_send_file_for_fetch_and_missing_file_fails(store, tmp_path):
    root = tmp_path / "host1"
    (root / "var" / "log").mkdir(parents=True)
    data = os.urandom(2 * (1 << 20) + 3)
    (root / "var" / "log" / "app.log").write_bytes(data)

    outcome = send_file(store, "/var/log/app.log", root=str(root))

    assert outcome["outcome"] == "sent", outcome
    manifest = outcome["manifest"]
    assert manifest["namespace"] == "fetch" and manifest["size"] == len(data)
    assert outcome["detail"] == f"{len(data)} bytes, sha256 {manifest['sha256']}"
    received = io.BytesIO()
    assert get_blob(store, manifest, received) == len(data)
    assert received.getvalue() == data
    blobs.delete_blob(store, manifest)
    assert store.keys("cmdb:fetch:*") == []

    missing = send_file(store, "/var/log/nope.log", root=str(root))
    assert missing["outcome"] == "failed" and "No such file or directory" in missing["detail"]
    folder = send_file(store, "/var/log", root=str(root))
    assert folder == {"outcome": "failed", "detail": f"{root / 'var' / 'log'} is a directory"}
    os.mkfifo(root / "pipe")
    assert "not a regular file" in send_file(store, "/pipe", root=str(root))["detail"]


def test_memory_stays_bounded(store, tmp_path):
    source = tmp_path / "big"
    with open(source, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        with open(source, "rb") as f:
            manifest = put_blob(store, f)
        outcome = receive_file(store, manifest, str(tmp_path / "copy"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome["outcome"] == "verified"
    assert peak < 12 * (1 << 20), f"peak {peak / (1 << 20):.1f} MiB"


def test_two_transfers_making_the_same_parent_folders_at_once_both_succeed(store, tmp_path):
    """Two agents on one machine (the demo, the tests) pushing to the same new folder."""
    import threading

    manifest = upload(store, b"same content\n")
    outcomes = []
    barrier = threading.Barrier(8)

    def push(n):
        barrier.wait()
        dest = str(tmp_path / "new" / "deeper" / f"f{n}")
        outcomes.append(receive_file(store, manifest, dest)["outcome"])

    threads = [threading.Thread(target=push, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["verified"] * 8


def test_two_pushes_racing_on_one_path_both_place_a_whole_copy(store, tmp_path):
    """Two jobs (or two agents on one disk) pushing one path at once: each places its copy,
    the last rename wins; neither is "swapped" where root alone can change the folder. Two
    processes, as two agents are, each pushing its own content over and over."""
    import multiprocessing

    contents = [b"first\n" * 100, b"second\n" * 100]
    manifests = [upload(store, data) for data in contents]
    dest = str(tmp_path / "new" / "raced.conf")
    failed = multiprocessing.get_context("fork").Queue()

    def push(manifest):
        for _ in range(300):
            outcome = receive_file(store, manifest, dest)
            if outcome["outcome"] not in ("verified", "skipped"):
                failed.put(outcome)
        failed.put(None)

    workers = [multiprocessing.get_context("fork").Process(target=push, args=(m,))
               for m in manifests]  # fmt: skip
    for w in workers:
        w.start()
    ends, bad = 0, []
    while ends < len(workers):
        got = failed.get(timeout=120)
        ends += got is None
        if got is not None:
            bad.append(got)
    for w in workers:
        w.join(10)

    assert not bad, bad[:3]
    assert (tmp_path / "new" / "raced.conf").read_bytes() in contents
    assert os.listdir(tmp_path / "new") == ["raced.conf"]  # no temp left behind
