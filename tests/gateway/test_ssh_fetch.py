"""gateway.ssh's fetch against a host that sends more than its stat said (a hostile host, or a
local user who swaps the file for a link to /dev/zero after the stat): the gateway's disk is
not filled."""

import asyncio
import contextlib
import types

import asyncssh

from gateway import ssh


class _EndlessFile:
    def __init__(self):
        self.sent = 0

    async def read(self, size=-1):
        size = 1 << 16 if size is None or size < 0 else size
        self.sent += size
        return b"\0" * size

    async def stat(self):
        return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, size=10)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


def test_a_fetch_that_sends_more_than_allowed_stops_there(tmp_path, monkeypatch):
    endless = _EndlessFile()

    class Sftp:
        async def stat(self, path):
            return asyncssh.SFTPAttrs(type=asyncssh.FILEXFER_TYPE_REGULAR, size=10)

        def open(self, path, mode="r", *args, **kwargs):
            return endless

        async def get(self, path, local, **kwargs):  # what sftp.get does, bounded for the test
            with open(local, "wb") as out:
                while endless.sent < 1 << 24:
                    out.write(await endless.read(1 << 16))

    class Conn:
        @contextlib.asynccontextmanager
        async def start_sftp_client(self):
            yield Sftp()

        async def run(self, command, **kwargs):
            return types.SimpleNamespace(stdout="0" * 64 + "  x\n", stderr="", exit_status=0)

    engine = ssh.Engine.__new__(ssh.Engine)
    monkeypatch.setattr(engine, "_using", contextlib.asynccontextmanager(
        lambda target: _yield(Conn())))  # fmt: skip
    local = tmp_path / "copy"
    why = asyncio.run(engine.fetch_file(None, "/var/log/app.log", str(local), 1000))
    assert why == ssh.E_FETCH_TOO_BIG.format(path="/var/log/app.log", max_bytes=1000)
    assert local.stat().st_size <= 1000 + ssh.CHUNK


async def _yield(value):
    yield value
