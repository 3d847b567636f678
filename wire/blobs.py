"""The blob store: files as content-addressed chunks in the broker's Redis.

Why chunks through Redis: agents hold only broker credentials (no inbound HTTP to the server, no
server URL on hosts), so the broker is the one path both sides already have. Blobs are keyed by
sha256, so one upload serves N hosts; fixed-size chunks bound memory on both sides; TTLs clean up
what nobody deletes; a large file never goes whole into one message (a task carries the manifest).

Keys: ``cmdb:{namespace}:{sha256}:{n}`` holds chunk n and ``cmdb:{namespace}:{sha256}:meta`` the
manifest as JSON, written last: while it exists, the blob is complete.

Exceptions (the message is the human reason)::

    TransferError
    ├── ChecksumMismatch   the bytes received are not the bytes that were sent
    └── UnsafePath         a target or an archive member would land outside where it may
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import redis

CHUNK_SIZE = 1 << 20
#: What a manifest off the wire may say: chunks of 1 KiB to 64 MiB, at most 1 TiB in all. A
#: forged one (chunk_size 1, 2**62 chunks) must not make anyone build 2**62 key names.
CHUNK_RANGE = (1 << 10, 1 << 26)
MAX_BLOB_BYTES = 1 << 40
BLOB_TTL = 6 * 3600
#: Chunks buffered in an upload pipeline before it is sent: memory stays near 8 chunks.
FLUSH_EVERY = 8

E_BAD_MANIFEST = "not a valid blob manifest: {manifest:.200}"
E_CHUNK_MISSING = "chunk {n} of {sha} expired or missing; start the transfer again"
E_MISMATCH = "checksum mismatch: expected {expected} ({size} bytes), got {got} ({got_size} bytes)"
E_CHANGED = "the file changed while it was being uploaded; try again"
E_TOO_LARGE = "more than {max_bytes} bytes, the most this transfer may move through the broker"

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]+")


class TransferError(Exception):
    """A transfer could not be done; the message says why, for an operator."""


class ChecksumMismatch(TransferError):
    """The bytes received do not hash to the manifest's sha256 and size."""


class UnsafePath(TransferError):
    """A path would be written outside the place it was meant for."""


def _key(namespace: str, sha: str, part: int | str) -> str:
    return f"cmdb:{namespace}:{sha}:{part}"


def checked(manifest: dict) -> tuple[str, int, int, str]:
    """(sha256, size, chunks, namespace) of a manifest that came off the wire, validated: the
    sha and namespace become key names, and the chunk count must match the size."""
    try:
        sha, size, chunk_size = manifest["sha256"], manifest["size"], manifest["chunk_size"]
        chunks, namespace = manifest["chunks"], manifest["namespace"]
        ok = bool(_SHA256.fullmatch(sha) and _NAMESPACE.fullmatch(namespace))
        ok = ok and all(type(v) is int for v in (size, chunk_size, chunks))
        ok = ok and 0 <= size <= MAX_BLOB_BYTES and CHUNK_RANGE[0] <= chunk_size <= CHUNK_RANGE[1]
        ok = ok and chunks == -(-size // chunk_size)
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise TransferError(E_BAD_MANIFEST.format(manifest=repr(manifest)))
    return sha, size, chunks, namespace


def _blocks(fileobj: BinaryIO, size: int, limit: float = math.inf):
    """The first ``limit`` bytes of ``fileobj`` in blocks of exactly ``size`` bytes (the last may
    be shorter), even from raw files whose read() may return less."""
    fileobj.seek(0)
    while limit > 0:
        want = min(size, limit)
        block = fileobj.read(want)
        while block and len(block) < want and (more := fileobj.read(want - len(block))):
            block += more
        if not block:
            return
        limit -= len(block)
        yield block


def put_blob(
    client: redis.Redis,
    fileobj: BinaryIO,
    ttl: int = BLOB_TTL,
    chunk_size: int = CHUNK_SIZE,
    namespace: str = "blob",
    max_bytes: float = math.inf,
) -> dict:
    """Upload the whole of ``fileobj`` (binary, seekable) unless the same content is there; return
    its manifest. A blob already present only has its TTLs refreshed, unless a chunk of it expired
    meanwhile: then it is uploaded again, with the chunk size it was made with, so that manifests
    already handed out stay valid. TransferError, before anything is sent, for more than
    ``max_bytes`` (a file that grows while it is read included): the broker's memory is the
    whole fleet's."""
    if not CHUNK_RANGE[0] <= chunk_size <= CHUNK_RANGE[1] or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"bad chunk_size {chunk_size!r} or namespace {namespace!r}")
    digest, size = hashlib.sha256(), 0
    for block in _blocks(fileobj, chunk_size, max_bytes + 1):
        digest.update(block)
        size += len(block)
        if size > max_bytes:
            raise TransferError(E_TOO_LARGE.format(max_bytes=max_bytes))
    sha = digest.hexdigest()
    manifest = {"sha256": sha, "size": size, "chunk_size": chunk_size,
                "chunks": -(-size // chunk_size), "namespace": namespace}  # fmt: skip
    meta = _key(namespace, sha, "meta")
    if (stored := client.get(meta)) is not None:
        with contextlib.suppress(ValueError, TransferError):  # unreadable meta: upload again
            if checked(known := json.loads(stored))[:2] == (sha, size):
                if _refresh(client, known, ttl):
                    return known
                manifest = known  # its chunk size is the one handed-out manifests name
    chunk_size, keys = manifest["chunk_size"], _chunk_keys(manifest)
    digest, written = hashlib.sha256(), 0
    pipe = client.pipeline(transaction=False)  # batching, not atomicity: the meta key is the commit
    # Only the bytes that were hashed: a log appended to meanwhile is sent as it was then.
    for key, block in zip(keys, _blocks(fileobj, chunk_size, size), strict=False):
        digest.update(block)
        written += len(block)
        pipe.set(key, block, ex=ttl)
        if len(pipe) >= FLUSH_EVERY:
            pipe.execute()
    pipe.execute()
    if (digest.hexdigest(), written) != (sha, size):
        _delete_keys(client, keys)
        raise TransferError(E_CHANGED)
    client.set(meta, json.dumps(manifest), ex=ttl)
    return manifest


def _chunk_keys(manifest: dict) -> list[str]:
    sha, _, chunks, namespace = checked(manifest)
    return [_key(namespace, sha, n) for n in range(chunks)]


def _refresh(client: redis.Redis, manifest: dict, ttl: int) -> bool:
    """Extend a stored blob's life; False when any of its keys is gone."""
    pipe = client.pipeline(transaction=False)
    for key in [_key(manifest["namespace"], manifest["sha256"], "meta"), *_chunk_keys(manifest)]:
        pipe.expire(key, ttl)
    return all(pipe.execute())


def keep_blob(client: redis.Redis, manifest: dict, ttl: int = BLOB_TTL) -> bool:
    """Extend the life of a blob still in use; False when some of it is already gone."""
    return _refresh(client, manifest, ttl)


def _delete_keys(client: redis.Redis, keys: list[str]) -> None:
    if keys:
        client.unlink(*keys)  # UNLINK frees the memory in the background; DEL would block Redis


def get_blob(client: redis.Redis, manifest: dict, fileobj: BinaryIO) -> int:
    """Stream a blob's chunks in order into ``fileobj``, verifying them; return its size."""
    sha, size, chunks, namespace = checked(manifest)
    digest, written = hashlib.sha256(), 0
    for n in range(chunks):
        block = client.get(_key(namespace, sha, n))
        if block is None:
            raise TransferError(E_CHUNK_MISSING.format(n=n, sha=sha, chunks=chunks))
        digest.update(block)
        fileobj.write(block)
        written += len(block)
        if written > size:  # a tampered chunk must not fill the disk before it is caught
            break
    if (digest.hexdigest(), written) != (sha, size):
        got = digest.hexdigest()
        raise ChecksumMismatch(
            E_MISMATCH.format(expected=sha, size=size, got=got, got_size=written)
        )
    return written


def delete_blob(client: redis.Redis, manifest: dict) -> None:
    """Delete a blob, its meta key first so that nobody dedupes onto a half-deleted blob."""
    sha, _, _, namespace = checked(manifest)
    _delete_keys(client, [_key(namespace, sha, "meta")])
    _delete_keys(client, _chunk_keys(manifest))


#: Delete a blob (KEYS: meta, then chunks) unless its meta TTL exceeds ARGV[1], in one atomic
#: step: put_blob refreshes the meta key first when it reuses a blob, so either the reuse sees
#: the blob gone (and uploads it again) or the release sees it fresh (and keeps it).
#: A blob whose meta key is gone is not touched: a new upload of the same content writes its
#: chunks before its meta key, and leftover chunks of an old one expire by themselves.
_RELEASE_SCRIPT = """
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then return 1 end
if ttl > tonumber(ARGV[1]) then return 0 end
for i = 1, #KEYS do redis.call('UNLINK', KEYS[i]) end
return 1
"""


def release_blob(client: redis.Redis, manifest: dict, quiet: int, ttl: int = BLOB_TTL) -> bool:
    """Delete a blob nobody has stored or reused within the last ``quiet`` seconds; True if
    it was deleted (or already gone)."""
    sha, _, _, namespace = checked(manifest)
    keys = [_key(namespace, sha, "meta"), *_chunk_keys(manifest)]
    return bool(client.eval(_RELEASE_SCRIPT, len(keys), *keys, ttl - quiet))
