"""cmdb.files.fetched: the tar made as it is sent, readable by tarfile and tar(1); which fetched
copies the web serves."""

import io
import os
import subprocess
import tarfile

import pytest

from cmdb.files.fetched import NotServed, open_fetched, tar_stream


def test_the_stream_is_a_tar_of_every_entry_in_small_pieces(tmp_path):
    sizes = {"empty": 0, "one-block": 512, "odd": 1000, "big": 3 * (1 << 16) + 7}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
    entries = [(f"127.0.1.1/{name}", open(tmp_path / name, "rb")) for name in sizes]  # noqa: SIM115

    pieces = list(tar_stream([*entries, ("SHA256SUMS", b"sums\n")], block=1 << 16))

    assert max(len(p) for p in pieces) <= 1 << 16
    assert all(f.closed for _, f in entries)
    data = b"".join(pieces)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert got == {
        **{f"127.0.1.1/{n}": (tmp_path / n).read_bytes() for n in sizes},
        "SHA256SUMS": b"sums\n",
    }
    (tmp_path / "out").mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(tmp_path / "out")], input=data, check=True)
    assert (tmp_path / "out/127.0.1.1/big").read_bytes() == (tmp_path / "big").read_bytes()


def test_only_copies_under_the_fetch_dir_are_served_and_never_through_a_link(tmp_path):
    fetch_dir = tmp_path / "fetched"
    (fetch_dir / "job" / "127.0.1.1").mkdir(parents=True)
    copy = fetch_dir / "job" / "127.0.1.1" / "app.log"
    copy.write_bytes(b"log\n")
    record = {"path": str(copy), "sha256": "0" * 64, "size": 4}

    with open_fetched(record, fetch_dir) as f:
        assert f.read() == b"log\n"

    secret = tmp_path / "signing_key"
    secret.write_bytes(b"key!")
    elsewhere = tmp_path / "cli-logs" / "127.0.1.1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "app.log").write_bytes(b"log\n")
    with pytest.raises(NotServed, match="--to"):
        open_fetched({**record, "path": str(elsewhere / "app.log")}, fetch_dir)
    # A link put in place of the copy, or of its folder, is not followed.
    copy.unlink()
    copy.symlink_to(secret)
    with pytest.raises(NotServed):
        open_fetched(record, fetch_dir)
    linked = fetch_dir / "job" / "127.0.1.2"
    linked.symlink_to(tmp_path / "cli-logs" / "127.0.1.1")
    with pytest.raises(NotServed, match="--to"):
        open_fetched({**record, "path": str(linked / "app.log")}, fetch_dir)
    # A different file in its place (another size) is not the one fetched.
    copy.unlink()
    copy.write_bytes(b"replaced\n")
    with pytest.raises(NotServed, match="no longer"):
        open_fetched(record, fetch_dir)
    copy.unlink()
    with pytest.raises(FileNotFoundError):
        open_fetched(record, fetch_dir)
