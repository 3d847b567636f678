"""deploy.files.tar_stream: a tar made as it is sent, readable by tarfile and tar(1)."""

import io
import os
import subprocess
import tarfile

from deploy.files import tar_stream


def test_the_stream_is_a_tar_of_every_entry_in_small_pieces(tmp_path):
    sizes = {"empty": 0, "one-block": 512, "odd": 1000, "big": 3 * (1 << 16) + 7}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
    entries = [(f"127.0.1.1/{name}", str(tmp_path / name)) for name in sizes]

    pieces = list(tar_stream([*entries, ("SHA256SUMS", b"sums\n")], block=1 << 16))

    assert max(len(p) for p in pieces) <= 1 << 16
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
