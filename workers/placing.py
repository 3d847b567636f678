"""Placing what a push brings on this host, and reading what a fetch sends: path safety,
verified temp files renamed into place, modes and owners.

The bytes travel through the blob store (wire.blobs); archives of folders are checked
(wire.archive) before anything of them is written.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import logging
import math
import os
import pwd
import secrets
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

from wire.archive import E_UNSAFE_MEMBER, unsafe_member, unsafe_name
from wire.blobs import BLOB_TTL, TransferError, UnsafePath, checked, get_blob, put_blob
from wire.messages import TransferOutcome

logger = logging.getLogger(__name__)

#: Modes of what a push creates when nothing says otherwise.
NEW_FILE_MODE = 0o644
NEW_DIR_MODE = 0o755

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
E_FETCH_TOO_LARGE = ("{path} is {size} bytes, more than the {max_bytes} a fetch may bring "
                     "(CMDB_MAX_FETCH_BYTES)")  # fmt: skip
DETAIL_SKIPPED = "already equal"
DETAIL_VERIFIED = "sha256 verified"
DETAIL_SENT = "{size} bytes, sha256 {sha256}"


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
    return {"outcome": TransferOutcome.FAILED, "detail": detail}


def _done(outcome: TransferOutcome, detail: str, sha: str, size: int, owner: str | None) -> dict:
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
        try:
            os.mkdir(path, NEW_DIR_MODE)
        except FileExistsError:
            # Made meanwhile by another transfer (two pushes, or two agents on one machine):
            # a folder now, not ours to take back. Anything else there is for the caller.
            if stat.S_ISDIR(os.lstat(path).st_mode):
                continue
            raise
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
        sha, size, _, _ = checked(manifest)
        ids = _owner_ids(owner, mode)
        old = os.lstat(target) if os.path.lexists(target) else None
        if old and stat.S_ISDIR(old.st_mode):
            return _failed(E_IS_DIR.format(path=target))
        if old and _equal(target, sha):
            _set_attrs(target, mode, ids)
            return _done(TransferOutcome.SKIPPED, DETAIL_SKIPPED, sha, size, owner)
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
    return _done(TransferOutcome.VERIFIED, DETAIL_VERIFIED, sha, written, owner)


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
        sha, size, _, _ = checked(manifest)
        ids = _owner_ids(owner, mode)
        old = os.lstat(target) if os.path.lexists(target) else None
        if old and not stat.S_ISDIR(old.st_mode):
            return _failed(E_NOT_DIR.format(path=target))
        if old and all(not unsafe_name(rel) and _equal(target / rel, digest)
                       for rel, digest in dict(files or {}).items()):  # fmt: skip
            _chown_tree(target, ids)
            _set_attrs(target, mode, ids)
            return _done(TransferOutcome.SKIPPED, DETAIL_SKIPPED, sha, size, owner)
        _make_parents(target.parent, created)
        with tempfile.TemporaryFile(dir=target.parent, prefix=f".{target.name}.cmdb-") as spool:
            get_blob(client, manifest, spool)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = tar.getmembers()
                if problem := unsafe_member(members):  # all checked before anything is written
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
    return _done(TransferOutcome.VERIFIED, DETAIL_VERIFIED, sha, size, owner)


def send_file(
    client, path: str, root: str | None = None, ttl: int = BLOB_TTL, namespace: str = "fetch",
    max_bytes: float = math.inf,
) -> dict:  # fmt: skip
    """For fetch: upload the host's file at ``path`` (at most ``max_bytes``); the outcome
    carries its manifest.

    Give each host its own ``namespace``: the server deletes a fetched blob once stored, and
    two hosts with the same file would otherwise share (and lose) one blob.
    """
    try:
        target = resolve_under(root, path)
        # Opened first, then looked at through the descriptor: what is checked is what is read.
        # O_NONBLOCK: opening a fifo would otherwise wait for a writer.
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a fifo would block, a device might never end
            os.close(fd)
            why = E_IS_DIR if stat.S_ISDIR(st.st_mode) else E_NOT_FILE
            return _failed(why.format(path=target))
        with os.fdopen(fd, "rb") as f:
            if st.st_size > max_bytes:
                return _failed(E_FETCH_TOO_LARGE.format(path=target, size=st.st_size,
                                                        max_bytes=max_bytes))  # fmt: skip
            os.set_blocking(fd, True)
            manifest = put_blob(client, f, ttl=ttl, namespace=namespace, max_bytes=max_bytes)
    except (TransferError, OSError) as exc:
        return _failed(_reason(exc))
    return {
        "outcome": TransferOutcome.SENT,
        "manifest": manifest,
        "detail": DETAIL_SENT.format(**manifest),
    }
