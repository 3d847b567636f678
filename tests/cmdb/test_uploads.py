"""cmdb.files.uploads: packing a folder for a push, and the checks on an uploaded archive."""

import io
import os
import tarfile
import tracemalloc

import pytest

from cmdb.files.uploads import extract_checked, pack_tree
from tests.support.blobs import (
    make_tree,
)
from tests.support.factories import tar_upload
from wire.blobs import TransferError, UnsafePath


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


@pytest.mark.parametrize("mode", ["w:gz", "w:xz", "w:bz2", "w"])
def test_a_damaged_archive_is_a_transfer_error_not_a_crash(tmp_path, mode):
    whole = tar_upload({"a": os.urandom(50_000), "b": b"b" * 10}, mode).getvalue()
    for damaged in (whole[: len(whole) // 2], whole[:40] + b"\xff" * 200 + whole[240:]):
        folder = tmp_path / f"out-{len(damaged)}"
        folder.mkdir()
        with pytest.raises(TransferError) as caught:
            extract_checked(io.BytesIO(damaged), str(folder))
        assert str(caught.value).startswith("not a readable tar archive")


def test_an_archive_that_unpacks_too_big_is_refused_before_anything_is_written(tmp_path):
    bomb = tar_upload({"zeros": b"\0" * 5_000_000}).getvalue()  # about 5 KB compressed

    with pytest.raises(TransferError, match="unpacks to 5000000 bytes in 1 members"):
        extract_checked(io.BytesIO(bomb), str(tmp_path), max_bytes=1_000_000)
    with pytest.raises(TransferError, match="at most"):
        extract_checked(io.BytesIO(bomb), str(tmp_path), max_members=0)
    assert os.listdir(tmp_path) == []
    extract_checked(io.BytesIO(bomb), str(tmp_path), max_bytes=5_000_000)
    assert (tmp_path / "zeros").stat().st_size == 5_000_000


def test_an_archive_of_a_million_tiny_members_is_refused_quickly_in_little_memory(tmp_path):
    """The attack: 2.4 MB of tar.gz whose listing cost 218 MiB and 18 s."""
    bomb = io.BytesIO()
    with tarfile.open(fileobj=bomb, mode="w:gz", compresslevel=1) as tar:
        for n in range(150_000):
            tar.addfile(tarfile.TarInfo(f"f{n}"))
    assert bomb.tell() < 4 << 20
    tracemalloc.start()
    try:
        with pytest.raises(TransferError, match="in 100001 members; at most"):
            extract_checked(io.BytesIO(bomb.getvalue()), str(tmp_path), max_members=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / (1 << 20):.0f} MiB"
    assert os.listdir(tmp_path) == []
