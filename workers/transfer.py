"""Move files between the server and agents as content-addressed chunks in the broker's Redis.

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
import errno
import hashlib
import json
import logging
import lzma
import math
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
BLOB_TTL = 6 * 3600
#: Chunks buffered in an upload pipeline before it is sent: memory stays near 8 chunks.
FLUSH_EVERY = 8
#: As the kernel's ELOOP limit, for following an archive's symlinks before extracting it.
MAX_LINK_HOPS = 40
#: Modes of what a push creates when nothing says otherwise.
NEW_FILE_MODE = 0o644
NEW_DIR_MODE = 0o755

E_BAD_MANIFEST = "not a valid blob manifest: {manifest:.200}"
E_CHUNK_MISSING = "chunk {n} of {sha} expired or missing; start the transfer again"
E_MISMATCH = "checksum mismatch: expected {expected} ({size} bytes), got {got} ({got_size} bytes)"
E_CHANGED = "the file changed while it was being uploaded; try again"
E_RELATIVE = "target path {path!r} is not an absolute path"
E_ESCAPES = "target path {path!r} leads outside the agent root {root!r}"
E_ROOT_ITSELF = "target path {path!r} names the root folder itself"
E_IS_DIR = "{path} is a directory"
E_NOT_FILE = "{path} is not a regular file"
E_NOT_DIR = "{path} is not a folder"
E_BAD_MODE = "mode {mode!r} is not a file mode between 0 and 0o7777"
E_UNKNOWN_OWNER = "unknown user or group in owner {owner!r}"
E_ATTRS = "content replaced and verified, but setting its mode or owner failed: {reason}"
E_NOT_ROOT = "owner left unchanged (the agent does not run as root)"
E_BAD_ARCHIVE = "not a readable tar archive: {reason}"
E_TOO_BIG = ("the archive unpacks to {size} bytes in {count} members; at most {max_bytes} "
             "bytes and {max_count} members")  # fmt: skip
E_UNSAFE_MEMBER = "unsafe archive member {name!r}: {reason}"
R_ABSOLUTE = "absolute path"
R_DOTDOT = "'..' component"
R_ITSELF = "names the destination folder itself"
R_DUPLICATE = "appears twice"
R_HARDLINK = "hard link"
R_SPECIAL = "device, fifo or other special file"
R_THROUGH_LINK = "path goes through the symlink {link!r}"
R_LINK_OUT = "symlink target {target!r} resolves outside the destination"
R_LOOP = "too many levels of symlinks"
DETAIL_SKIPPED = "already equal"
DETAIL_VERIFIED = "sha256 verified"
DETAIL_SENT = "{size} bytes, sha256 {sha256}"

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


def _checked(manifest: dict) -> tuple[str, int, int, str]:
    """(sha256, size, chunks, namespace) of a manifest that came off the wire, validated: the
    sha and namespace become key names, and the chunk count must match the size."""
    try:
        sha, size, chunk_size = manifest["sha256"], manifest["size"], manifest["chunk_size"]
        chunks, namespace = manifest["chunks"], manifest["namespace"]
        ok = bool(_SHA256.fullmatch(sha) and _NAMESPACE.fullmatch(namespace))
        ok = ok and all(type(v) is int for v in (size, chunk_size, chunks))
        ok = ok and size >= 0 and chunk_size > 0 and chunks == -(-size // chunk_size)
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
) -> dict:
    """Upload the whole of ``fileobj`` (binary, seekable) unless the same content is there; return
    its manifest. A blob already present only has its TTLs refreshed, unless a chunk of it expired
    meanwhile: then it is uploaded again, with the chunk size it was made with, so that manifests
    already handed out stay valid."""
    if chunk_size <= 0 or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"bad chunk_size {chunk_size!r} or namespace {namespace!r}")
    digest, size = hashlib.sha256(), 0
    for block in _blocks(fileobj, chunk_size):
        digest.update(block)
        size += len(block)
    sha = digest.hexdigest()
    manifest = {"sha256": sha, "size": size, "chunk_size": chunk_size,
                "chunks": -(-size // chunk_size), "namespace": namespace}  # fmt: skip
    meta = _key(namespace, sha, "meta")
    if (stored := client.get(meta)) is not None:
        with contextlib.suppress(ValueError, TransferError):  # unreadable meta: upload again
            if _checked(known := json.loads(stored))[:2] == (sha, size):
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
    sha, _, chunks, namespace = _checked(manifest)
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
    sha, size, chunks, namespace = _checked(manifest)
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
    sha, _, _, namespace = _checked(manifest)
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
    sha, _, _, namespace = _checked(manifest)
    keys = [_key(namespace, sha, "meta"), *_chunk_keys(manifest)]
    return bool(client.eval(_RELEASE_SCRIPT, len(keys), *keys, ttl - quiet))


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def resolve_under(root: str | None, path: str) -> Path:
    """Where an operator's absolute ``path`` is on this host: itself, or under ``root`` when
    several agents share a machine (tests, the demo). The check is lexical: the root separates
    agents, it is not a sandbox against symlinks the host itself has inside it."""
    if not isinstance(path, str) or "\0" in path or not os.path.isabs(path):
        raise UnsafePath(E_RELATIVE.format(path=path))
    if root is None:
        if os.path.dirname(os.path.normpath(path)) == os.path.normpath(path):
            raise UnsafePath(E_ROOT_ITSELF.format(path=path))
        return Path(path)
    base = os.path.abspath(root)
    target = os.path.normpath(os.path.join(base, path.lstrip("/\\")))
    if os.path.commonpath([base, target]) != base:
        raise UnsafePath(E_ESCAPES.format(path=path, root=root))
    if target == base:
        raise UnsafePath(E_ROOT_ITSELF.format(path=path))
    return Path(target)


def _failed(detail: str) -> dict:
    return {"outcome": "failed", "detail": detail}


def _done(outcome: str, detail: str, sha: str, size: int, owner: str | None) -> dict:
    if owner and not _is_root():
        detail += "; " + E_NOT_ROOT
    return {"outcome": outcome, "detail": detail, "sha256": sha, "bytes": size}


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _is_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0


def _owner_ids(owner: str | None, mode: int | None) -> tuple[int, int] | None:
    """Check ``mode``; (uid, gid) for an owner "user" or "user:group" (names or numbers), or None
    when none was asked for or only root could apply it."""
    if mode is not None and not (type(mode) is int and 0 <= mode <= 0o7777):
        raise TransferError(E_BAD_MODE.format(mode=mode))
    if not owner or not _is_root():
        return None
    import grp  # Unix only, and only needed here
    import pwd

    user, _, group = owner.partition(":")
    try:
        uid = -1 if not user else int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        gid = -1 if not group else int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise TransferError(E_UNKNOWN_OWNER.format(owner=owner)) from None
    return uid, gid


def _equal(path: Path, sha: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and sha256_file(path) == sha
    except OSError:
        return False


def _make_parents(directory: Path, created: list[Path]) -> None:
    """mkdir -p, recording what it made so that a failed transfer can take it back."""
    missing = []
    while not os.path.lexists(directory) and directory.parent != directory:
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        os.mkdir(path, NEW_DIR_MODE)
        created.append(path)


def _undo(created: list[Path], temp: str | None) -> None:
    if temp and os.path.isdir(temp):
        shutil.rmtree(temp, ignore_errors=True)
    elif temp:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    for path in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; not possible everywhere (Windows), and not worth a failure."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def receive_file(client, manifest, dest, mode=None, owner=None, root=None) -> dict:
    """Put a blob at ``dest`` through a verified temp file beside it, or skip it when equal.
    Never raises for expected failures: the outcome says "failed" and why."""
    created, temp, placed, attrs_error = [], None, False, None
    try:
        target = resolve_under(root, dest)
        sha, size, _, _ = _checked(manifest)
        ids = _owner_ids(owner, mode)
        old = os.lstat(target) if os.path.lexists(target) else None
        if old and stat.S_ISDIR(old.st_mode):
            return _failed(E_IS_DIR.format(path=target))
        if old and _equal(target, sha):
            _set_attrs(target, mode, ids)
            return _done("skipped", DETAIL_SKIPPED, sha, size, owner)
        _make_parents(target.parent, created)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.cmdb-")
        with os.fdopen(fd, "wb") as f:
            written = get_blob(client, manifest, f)
            f.flush()
            os.fsync(f.fileno())
        keep = old if old and stat.S_ISREG(old.st_mode) else None
        try:  # before the rename, so the file never shows up with the wrong mode or owner
            _set_attrs(temp, mode, ids, keep, NEW_FILE_MODE)
        except OSError as exc:
            attrs_error = E_ATTRS.format(reason=_reason(exc))
        os.replace(temp, target)
        placed = True
        _fsync_dir(target.parent)
    except (TransferError, OSError) as exc:
        return _failed(_reason(exc))
    finally:
        if not placed:
            _undo(created, temp)
    if attrs_error:
        return _failed(attrs_error)
    return _done("verified", DETAIL_VERIFIED, sha, written, owner)


def _set_attrs(path, mode, ids, old: os.stat_result | None = None, default: int | None = None):
    """chmod/chown ``path`` as asked; else as the ``old`` one it replaces was, as editing it would
    have left it (or ``default``: mkstemp's 0600 would hide a pushed file from its service)."""
    mode = mode if mode is not None else stat.S_IMODE(old.st_mode) if old else default
    ids = ids or ((old.st_uid, old.st_gid) if old and _is_root() else None)
    if mode is not None:
        os.chmod(path, mode)
    if ids:
        os.chown(path, *ids)


def _chown_tree(top: Path | str, ids: tuple[int, int] | None) -> None:
    """An owner asked for a folder owns all it holds, as `chown -R` would leave it (``mode``
    stays the top folder's alone: the archive carries each file's own). The top folder itself
    is left to the caller, to be done last.

    Root is chowning a tree its new owner may already own (a re-run): so no path is followed.
    os.fwalk opens each folder relative to its parent and checks it is the one it listed, and
    each entry is chowned relative to that open folder without following links; a file with
    other hard links (perhaps to /etc/shadow) is left alone.
    """
    if not ids:
        return
    for _, dirnames, filenames, dirfd in os.fwalk(top, follow_symlinks=False):
        for name in dirnames + filenames:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                logger.warning("owner not set on %s/%s: it has other hard links", top, name)
                continue
            os.chown(name, *ids, dir_fd=dirfd, follow_symlinks=False)


def receive_tree(client, manifest, dest, files, mode=None, owner=None, root=None) -> dict:
    """Replace the folder ``dest`` with a verified, checked archive, or skip it when every file
    in ``files`` ({relpath: sha256}) is already there. Never raises for expected failures."""
    created, work, placed = [], None, False
    try:
        target = resolve_under(root, dest)
        sha, size, _, _ = _checked(manifest)
        ids = _owner_ids(owner, mode)
        old = os.lstat(target) if os.path.lexists(target) else None
        if old and not stat.S_ISDIR(old.st_mode):
            return _failed(E_NOT_DIR.format(path=target))
        if old and all(not _unsafe_name(rel) and _equal(target / rel, digest)
                       for rel, digest in dict(files or {}).items()):  # fmt: skip
            _chown_tree(target, ids)
            _set_attrs(target, mode, ids)
            return _done("skipped", DETAIL_SKIPPED, sha, size, owner)
        _make_parents(target.parent, created)
        with tempfile.TemporaryFile(dir=target.parent, prefix=f".{target.name}.cmdb-") as spool:
            get_blob(client, manifest, spool)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = tar.getmembers()
                if problem := _unsafe_member(members):  # all checked before anything is written
                    return _failed(E_UNSAFE_MEMBER.format(name=problem[0], reason=problem[1]))
                work = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.cmdb-")
                # The data filter is a second line of defence (3.11.7's has known bypasses).
                tar.extractall(work, members=members, filter="data")
        # Contents first, while the work folder is still root's (0700): the owner cannot swap
        # anything inside it before it is done.
        _chown_tree(work, ids)
        _set_attrs(work, mode, ids, old, NEW_DIR_MODE)
        if old:
            # Two renames, not atomic: dest is briefly absent. Linux's renameat2(RENAME_EXCHANGE)
            # would close the gap, but the stdlib has no binding for it.
            aside = target.with_name(f".{target.name}.cmdb-old-{secrets.token_hex(4)}")
            os.rename(target, aside)
            try:
                os.rename(work, target)
            except OSError:
                os.rename(aside, target)
                raise
            placed = True
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(work, target)
            placed = True
        _fsync_dir(target.parent)
    except tarfile.TarError as exc:
        return _failed(E_BAD_ARCHIVE.format(reason=exc))
    except (TransferError, OSError) as exc:
        return _failed(_reason(exc))
    finally:
        if not placed:
            _undo(created, work)
    return _done("verified", DETAIL_VERIFIED, sha, size, owner)


def send_file(
    client, path: str, root: str | None = None, ttl: int = BLOB_TTL, namespace: str = "fetch"
) -> dict:
    """For fetch: upload the host's file at ``path``; the outcome carries its manifest.

    Give each host its own ``namespace``: the server deletes a fetched blob once stored, and
    two hosts with the same file would otherwise share (and lose) one blob.
    """
    try:
        target = resolve_under(root, path)
        st = os.stat(target)
        if stat.S_ISDIR(st.st_mode):
            return _failed(E_IS_DIR.format(path=target))
        if not stat.S_ISREG(st.st_mode):  # a fifo would block, a device might never end
            return _failed(E_NOT_FILE.format(path=target))
        with open(target, "rb") as f:
            manifest = put_blob(client, f, ttl=ttl, namespace=namespace)
    except (TransferError, OSError) as exc:
        return _failed(_reason(exc))
    return {"outcome": "sent", "manifest": manifest, "detail": DETAIL_SENT.format(**manifest)}


def extract_checked(
    fileobj: BinaryIO, folder: str, max_bytes: int = 1 << 40, max_members: int = 100_000
) -> None:
    """Extract a tar archive (plain, gzip, bzip2 or xz) into the empty ``folder``, after the
    member checks receive_tree makes: for a folder uploaded as an archive, refused before it is
    sent anywhere rather than by every host. A small compressed archive can unpack to
    terabytes: its members' total size and count are checked against the limits first."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            members = tar.getmembers()
            if problem := _unsafe_member(members):
                raise UnsafePath(E_UNSAFE_MEMBER.format(name=problem[0], reason=problem[1]))
            total = sum(m.size for m in members if m.isreg())
            if total > max_bytes or len(members) > max_members:
                raise TransferError(
                    E_TOO_BIG.format(size=total, count=len(members), max_bytes=max_bytes,
                                     max_count=max_members)
                )  # fmt: skip
            tar.extractall(folder, members=members, filter="data")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the server's disk, not the archive
        # Truncated or corrupt compressed data (gzip's and bz2's errors are OSErrors too).
        raise TransferError(E_BAD_ARCHIVE.format(reason=exc)) from None
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise TransferError(E_BAD_ARCHIVE.format(reason=exc or type(exc).__name__)) from None


def _unsafe_name(name: str) -> bool:
    return name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name)


class _HashingReader:
    """Hashes what tarfile reads, so that packing reads each file once."""

    def __init__(self, f: BinaryIO):
        self._f, self.digest = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.digest.update(data)
        return data


def _raise(exc: OSError) -> None:
    raise exc  # os.walk would otherwise skip unreadable folders and pack an incomplete tree


def pack_tree(folder: str, spool_dir: str | None = None) -> tuple[BinaryIO, dict]:
    """A deterministic tar of ``folder``'s contents in a temporary file (at its start), and
    {relpath: sha256} of its regular files. Links must stay inside the tree (UnsafePath)."""
    if not os.path.isdir(folder):
        raise TransferError(E_NOT_DIR.format(path=folder))
    infos = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
        for name in dirnames + filenames:  # symlinks to folders are listed, never followed
            full = os.path.join(dirpath, name)
            rel, st = os.path.relpath(full, folder).replace(os.sep, "/"), os.lstat(full)
            info = tarfile.TarInfo(rel)
            info.mtime, info.mode = int(st.st_mtime), stat.S_IMODE(st.st_mode)  # uid/gid stay 0
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size  # built by hand: gettarinfo turns hard links into LNKTYPE
            else:
                raise UnsafePath(E_UNSAFE_MEMBER.format(name=info.name, reason=R_SPECIAL))
            infos.append((info, full))
    infos.sort(key=lambda item: item[0].name.split("/"))
    if problem := _unsafe_member([info for info, _ in infos]):
        raise UnsafePath(E_UNSAFE_MEMBER.format(name=problem[0], reason=problem[1]))
    spool, files = tempfile.TemporaryFile(dir=spool_dir), {}  # noqa: SIM115 (returned open)
    try:
        with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, full in infos:
                if not info.isreg():
                    tar.addfile(info)
                    continue
                with open(full, "rb") as f:
                    tar.addfile(info, reader := _HashingReader(f))
                files[info.name] = reader.digest.hexdigest()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, files


def _unsafe_member(members: list[tarfile.TarInfo]) -> tuple[str, str] | None:
    """(name, reason) of the first member that could write outside the destination, else None.
    Symlinks are followed through the archive's own links, as the kernel would after extraction
    into an empty folder; so no path may go through a link, and no name may appear twice."""
    links, seen = {}, set()
    for m in members:
        norm = posixpath.normpath(m.name)
        reason = (R_ABSOLUTE if m.name.startswith(("/", "\\")) else R_DOTDOT if _unsafe_name(m.name)
                  else R_ITSELF if norm == "." and not m.isdir() else R_DUPLICATE if norm in seen
                  else R_HARDLINK if m.islnk() else None if m.isreg() or m.isdir() or m.issym()
                  else R_SPECIAL)  # fmt: skip
        if reason:
            return m.name, reason
        seen.add(norm)
        if m.issym():
            links[norm] = m.linkname
    for m in members:
        norm = posixpath.normpath(m.name)
        parts = norm.split("/")
        for depth in range(1, len(parts)):
            if (prefix := "/".join(parts[:depth])) in links:
                return m.name, R_THROUGH_LINK.format(link=prefix)
        if m.issym() and (reason := _link_escapes(links, parts[:-1], m.linkname)):
            return m.name, reason
    return None


def _link_escapes(links: dict, here: list[str], target: str) -> str | None:
    """Why following ``target`` from the folder ``here`` leaves the destination, or None."""
    if target.startswith(("/", "\\")):
        return R_LINK_OUT.format(target=target)
    todo, here, hops = target.split("/")[::-1], list(here), 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return R_LINK_OUT.format(target=target)
            here.pop()
            continue
        here.append(part)
        if (link := links.get("/".join(here))) is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                return R_LOOP
            if link.startswith(("/", "\\")):
                return R_LINK_OUT.format(target=target)
            here.pop()
            todo.extend(link.split("/")[::-1])
    return None
