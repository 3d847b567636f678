"""Placing what a push brings on this host, and reading what a fetch sends: path safety,
verified temp files renamed into place, modes and owners.

The bytes travel through the blob store (wire.blobs); archives of folders are checked
(wire.archive) before anything of them is written. The agent is root and a local user may be
racing it: the destination's folder is reached and held open by workers.fdpath, and from there
every step names entries relative to it and sets modes and owners through open files, so that
nothing swapped in is followed.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import logging
import math
import os
import pwd
import shutil
import stat
import tarfile
from pathlib import Path

from wire.archive import E_UNSAFE_MEMBER, unsafe_member, unsafe_name
from wire.blobs import BLOB_TTL, TransferError, UnsafePath, checked, get_blob, put_blob
from wire.messages import TransferOutcome
from workers import fdpath
from workers.fdpath import NEW_DIR_MODE

logger = logging.getLogger(__name__)

#: Mode of a file a push creates when nothing says otherwise (folders: fdpath.NEW_DIR_MODE).
NEW_FILE_MODE = 0o644

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
E_SWAPPED = ("{path} was swapped for something else as the push put it in place: "
             "what is there is not what was pushed")  # fmt: skip
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


def _digest(fd: int) -> str:
    with open(fd, "rb", closefd=False) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _keepable(st: os.stat_result, mode: int | None, ids: tuple[int, int] | None) -> bool:
    """Whether an equal file or folder may stay as it is, rather than be replaced by a new copy:
    not when someone who can write it now would lose that (its old owner, once it becomes
    root's): they may hold it open to write it later, or (a folder) swap what is in it after it
    was compared. A new copy is a file that nobody holds."""
    uid = ids[0] if ids and ids[0] != -1 else st.st_uid
    gid = ids[1] if ids and ids[1] != -1 else st.st_gid
    new_mode = st.st_mode if mode is None else mode
    if st.st_uid not in (0, os.geteuid(), uid):
        return False
    group_keeps = bool(new_mode & stat.S_IWGRP) and gid == st.st_gid
    if st.st_mode & stat.S_IWGRP and st.st_gid not in (0, os.getegid()) and not group_keeps:
        return False
    return not (st.st_mode & stat.S_IWOTH and not new_mode & stat.S_IWOTH)


def _set_attrs(fd: int, mode, ids, old: os.stat_result | None = None, default=None) -> None:
    """Give the open file or folder ``fd`` the mode and owner asked for; else those of the ``old``
    one it replaces, as editing it would have left it (or ``default``: a temp file's 0600 would
    hide a pushed file from its service). Through the descriptor: a name can be swapped for a
    link between two calls, an open file cannot. The owner first: chown clears set-user-ID."""
    mode = mode if mode is not None else stat.S_IMODE(old.st_mode) if old else default
    ids = ids or ((old.st_uid, old.st_gid) if old and _is_root() else None)
    if ids:
        os.fchown(fd, *ids)
    if mode is not None:
        os.fchmod(fd, mode)


def _undo(parent: fdpath.Parent, temp: str | None, folder: bool = False) -> None:
    """Take back what a failed transfer left: its temp file or folder, the folders it made."""
    if temp and folder:
        shutil.rmtree(temp, ignore_errors=True, dir_fd=parent.fd)  # follows no link inside
    elif temp:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=parent.fd)
    parent.remove_made()


def receive_file(client, manifest, dest, mode=None, owner=None, root=None, *,
                 allow_unsafe_parents: bool = False) -> dict:  # fmt: skip
    """Put a blob at ``dest`` through a verified temp file beside it, or skip it when equal.
    A destination in a folder that a user other than root can change is refused unless
    ``allow_unsafe_parents`` (fdpath.open_parent). Never raises for expected failures: the
    outcome says "failed" and why."""
    try:
        target = resolve_under(root, dest)
        sha, size, _, _ = checked(manifest)
        ids = _owner_ids(owner, mode)
        with fdpath.open_parent(root, target, allow_unsafe_parents) as parent:
            return _place_file(client, manifest, parent, target, mode, ids, owner, sha, size)
    except (TransferError, OSError) as exc:
        return _failed(_reason(exc))


def _place_file(client, manifest, parent, target, mode, ids, owner, sha, size) -> dict:
    name, temp, placed, attrs_error = target.name, None, False, None
    try:
        old = fdpath.lstat_in(parent.fd, name)
        if old and stat.S_ISDIR(old.st_mode):
            return _failed(E_IS_DIR.format(path=target))
        if old and _kept_if_equal(parent.fd, name, sha, mode, ids):
            return _done(TransferOutcome.SKIPPED, DETAIL_SKIPPED, sha, size, owner)
        fd, temp = fdpath.create_temp(parent.fd, name)
        with os.fdopen(fd, "wb") as f:
            written = get_blob(client, manifest, f)
            f.flush()
            os.fsync(fd)
            keep = old if old and stat.S_ISREG(old.st_mode) else None
            try:  # before the rename, so the file never shows up with the wrong mode or owner
                _set_attrs(fd, mode, ids, keep, NEW_FILE_MODE)
            except OSError as exc:
                attrs_error = E_ATTRS.format(reason=_reason(exc))
            os.rename(temp, name, src_dir_fd=parent.fd, dst_dir_fd=parent.fd)
            placed = True
            if not fdpath.holds(parent.fd, name, fd):  # only where a user may change the folder
                return _failed(E_SWAPPED.format(path=target))
        fdpath.fsync_dir(parent.fd)
    finally:
        if not placed:
            _undo(parent, temp)
    if attrs_error:
        return _failed(attrs_error)
    return _done(TransferOutcome.VERIFIED, DETAIL_VERIFIED, sha, written, owner)


def _kept_if_equal(dir_fd: int, name: str, sha: str, mode, ids) -> bool:
    """Whether the file ``name`` already has the pushed content and may stay; if so it gets the
    mode and owner asked for, through the file as opened (a link is never equal, nor followed).
    Another name for the same file (a hard link), or a writer who would lose that right
    (_keepable), and it is replaced by a new copy instead."""
    fd = fdpath.open_inside(dir_fd, name)
    if fd is None:
        return False
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and _keepable(st, mode, ids)):
            return False
        if _digest(fd) != sha:
            return False
        _set_attrs(fd, mode, ids)
        return True
    finally:
        os.close(fd)


def _chown_tree(top_fd: int, ids: tuple[int, int] | None, label) -> None:
    """An owner asked for a folder owns all it holds, as `chown -R` would leave it (``mode``
    stays the top folder's alone: the archive carries each file's own). The top folder itself
    is left to the caller, to be done last.

    Root is chowning a tree its new owner may already own (a re-run), who may be changing it
    meanwhile: so no path is followed. os.fwalk opens each folder relative to its parent, from
    the open top, and checks it is the one it listed; files and folders are chowned through a
    descriptor opened without following links, links themselves by name (lchown). A file with
    other hard links (perhaps to /etc/shadow) is left alone.
    """
    if not ids:
        return
    for here, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top_fd, follow_symlinks=False):
        for name in dirnames + filenames:
            where = os.path.normpath(os.path.join(label, here, name))
            _chown_entry(dirfd, name, ids, where)


def _chown_entry(dir_fd: int, name: str, ids: tuple[int, int], where: str) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        # Links (and anything else an old tree may hold): opening is no way to reach them.
        os.chown(name, *ids, dir_fd=dir_fd, follow_symlinks=False)
        return
    flags = fdpath.DIR_FLAGS if stat.S_ISDIR(st.st_mode) else fdpath.FILE_FLAGS
    fd = os.open(name, flags, dir_fd=dir_fd)  # O_NOFOLLOW: swapped for a link, it fails
    try:
        now = os.fstat(fd)
        if stat.S_ISREG(now.st_mode) and now.st_nlink > 1:
            logger.warning("owner not set on %s: it has other hard links", where)
            return
        os.fchown(fd, *ids)
    finally:
        os.close(fd)


def _contents_keepable(top_fd: int, ids: tuple[int, int] | None) -> bool:
    """_keepable for everything in the open folder (links aside: they cannot be written)."""
    for _, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top_fd, follow_symlinks=False):
        for name in dirnames + filenames:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode) and not _keepable(st, None, ids):
                return False
    return True


def receive_tree(client, manifest, dest, files, mode=None, owner=None, root=None, *,
                 allow_unsafe_parents: bool = False) -> dict:  # fmt: skip
    """Replace the folder ``dest`` with a verified, checked archive, or skip it when every file
    in ``files`` ({relpath: sha256}) is already there. Refuses a destination in a folder that a
    user other than root can change, unless ``allow_unsafe_parents``, as receive_file does.
    Never raises for expected failures."""
    try:
        target = resolve_under(root, dest)
        sha, size, _, _ = checked(manifest)
        ids = _owner_ids(owner, mode)
        with fdpath.open_parent(root, target, allow_unsafe_parents) as parent:
            return _place_tree(client, manifest, parent, target, files, mode, ids, owner, sha,
                               size)  # fmt: skip
    except tarfile.TarError as exc:
        return _failed(E_BAD_ARCHIVE.format(reason=exc))
    except (TransferError, OSError) as exc:
        return _failed(_reason(exc))


def _place_tree(client, manifest, parent, target, files, mode, ids, owner, sha, size) -> dict:
    name, pfd = target.name, parent.fd
    work, work_fd, placed = None, None, False
    try:
        old = fdpath.lstat_in(pfd, name)
        if old and not stat.S_ISDIR(old.st_mode):
            return _failed(E_NOT_DIR.format(path=target))
        if old and _tree_kept_if_equal(pfd, name, files, mode, ids, target):
            return _done(TransferOutcome.SKIPPED, DETAIL_SKIPPED, sha, size, owner)
        spool_fd, spool_name = fdpath.create_temp(pfd, name, os.O_RDWR)
        os.unlink(spool_name, dir_fd=pfd)  # open, and by no name
        with os.fdopen(spool_fd, "w+b") as spool:
            get_blob(client, manifest, spool)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = tar.getmembers()
                if problem := unsafe_member(members):  # all checked before anything is written
                    return _failed(E_UNSAFE_MEMBER.format(name=problem[0], reason=problem[1]))
                work_fd, work = fdpath.make_temp_dir(pfd, name)
                # Into the open work folder, whatever is done meanwhile to the names above it.
                # The data filter is a second line of defence (3.11.7's has known bypasses).
                into = fdpath.path_of(work_fd, os.path.join(parent.path, work))
                tar.extractall(into, members=members, filter="data")
        # Contents first, while the work folder is still root's (0700): the owner cannot swap
        # anything inside it before it is done.
        _chown_tree(work_fd, ids, target)
        _set_attrs(work_fd, mode, ids, old, NEW_DIR_MODE)
        if old:
            # Two renames, not atomic: dest is briefly absent. Linux's renameat2(RENAME_EXCHANGE)
            # would close the gap, but the stdlib has no binding for it.
            aside = f".{name}.cmdb-old-{fdpath.temp_suffix()}"
            os.rename(name, aside, src_dir_fd=pfd, dst_dir_fd=pfd)
            try:
                os.rename(work, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            except OSError:
                os.rename(aside, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                raise
            placed = True
            shutil.rmtree(aside, ignore_errors=True, dir_fd=pfd)  # a link there is not followed
        else:
            os.rename(work, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            placed = True
        if not fdpath.holds(pfd, name, work_fd):  # only where a user may change the folder
            return _failed(E_SWAPPED.format(path=target))
        fdpath.fsync_dir(pfd)
    finally:
        if work_fd is not None:
            os.close(work_fd)
        if not placed:
            _undo(parent, work, folder=True)
    return _done(TransferOutcome.VERIFIED, DETAIL_VERIFIED, sha, size, owner)


def _tree_kept_if_equal(dir_fd: int, name: str, files, mode, ids, target) -> bool:
    """Whether the folder ``name`` already holds every file in ``files`` ({relpath: sha256}) and
    may stay; if so it gets the owner and mode asked for. Looked at through open folders,
    following no link (a link on the way is never equal); replaced instead when a writer of
    anything in it would lose that right (_keepable)."""
    top = fdpath.open_inside(dir_fd, name, folder=True)
    if top is None:
        return False
    try:
        if not (_keepable(os.fstat(top), mode, ids) and _contents_keepable(top, ids)):
            return False
        for rel, digest in dict(files or {}).items():
            fd = None if unsafe_name(rel) else fdpath.open_inside(top, rel)
            if fd is None:
                return False
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode) or _digest(fd) != digest:
                    return False
            finally:
                os.close(fd)
        _chown_tree(top, ids, target)
        _set_attrs(top, mode, ids)
        return True
    finally:
        os.close(top)


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
        # Links are followed, unlike a push's: the operator may name /usr/bin/editor on purpose,
        # and what is read goes to the operator, not to a local user.
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
