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
import posixpath
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
R_CLASH = "it is both a folder and something else"
E_FETCH_TOO_LARGE = ("{path} is {size} bytes, more than the {max_bytes} a fetch may bring "
                     "(CMDB_MAX_FETCH_BYTES)")  # fmt: skip
DETAIL_SKIPPED = "already equal"
DETAIL_VERIFIED = "sha256 verified"
DETAIL_SENT = "{size} bytes, sha256 {sha256}"
W_OWNER_LEFT = ("owner not set on %s: no part of the push (a link, or a file not listed), so "
                "not one it can check before a chown; left as it is")  # fmt: skip
W_ASIDE_SWAPPED = ("left %s: the old folder was swapped for something else as it was moved "
                   "aside, and what is there now is not the push's to remove")  # fmt: skip
W_ASIDE_LEFT = ("could not remove all of the old folder, now %s: what is left is in folders "
                "of another owner, on another file system, or was changed meanwhile")  # fmt: skip

#: Bytes copied at a time from an archive member to its file.
COPY_CHUNK = 1 << 20


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


def _has_owner(st: os.stat_result, ids: tuple[int, int] | None) -> bool:
    return not ids or (ids[0] in (-1, st.st_uid) and ids[1] in (-1, st.st_gid))


def _keepable(st: os.stat_result, mode: int | None, ids: tuple[int, int] | None) -> bool:
    """Whether an equal file or folder may stay as it is, rather than be replaced by a new copy.

    Not when another user owns it (root's, the agent's or the owner asked for alone): in /tmp
    anyone can make the destination's name first, and they may hold their file open to write
    it later. Not when someone who can write it now would lose that (its old owner, once it
    becomes root's): the same, or (a folder) they swap what is in it after it was compared.
    A new copy is a file that nobody holds."""
    asked = ids[0] if ids and ids[0] != -1 else None
    gid = ids[1] if ids and ids[1] != -1 else st.st_gid
    new_mode = st.st_mode if mode is None else mode
    if st.st_uid not in (0, os.geteuid(), asked):
        return False
    group_keeps = bool(new_mode & stat.S_IWGRP) and gid == st.st_gid
    if st.st_mode & stat.S_IWGRP and st.st_gid not in (0, os.getegid()) and not group_keeps:
        return False
    return not (st.st_mode & stat.S_IWOTH and not new_mode & stat.S_IWOTH)


def _inherited(old: os.stat_result | None, default: int | None):
    """(mode, owner) a new copy takes over from the ``old`` file or folder it replaces, as
    editing it would have left them; (``default``, None: root's) when it has none to give.

    Only one of root's (or the agent's own user's) that has no other name gives them: anyone
    can make the name first in /tmp (their file would make the new copy theirs, mode 0666), or
    with fs.protected_hardlinks=0 put a hard link to a setuid-root binary there (the operator's
    content would become setuid root). Set-id and sticky bits are taken from root's only."""
    if old is None or old.st_uid not in (0, os.geteuid()):
        return default, None
    if not stat.S_ISDIR(old.st_mode) and old.st_nlink != 1:
        return default, None
    mode = stat.S_IMODE(old.st_mode)
    if not (old.st_uid == 0 and _is_root()):
        mode &= 0o777
    return mode, (old.st_uid, old.st_gid) if _is_root() else None


def _set_attrs(fd: int, mode, ids, old: os.stat_result | None = None, default=None) -> None:
    """Give the open file or folder ``fd`` the mode and owner asked for; else those it inherits
    from the ``old`` one it replaces (_inherited), or ``default``: a temp file's 0600 would
    hide a pushed file from its service. Through the descriptor: a name can be swapped for a
    link between two calls, an open file cannot. The owner first: chown clears set-user-ID."""
    kept_mode, kept_ids = _inherited(old, default)
    mode = mode if mode is not None else kept_mode
    ids = ids or kept_ids
    if ids:
        os.fchown(fd, *ids)
    if mode is not None:
        os.fchmod(fd, mode)


def _undo(parent: fdpath.Parent, temp: str | None, folder_fd: int | None = None) -> None:
    """Take back what a failed transfer left: its temp file or folder (held open as
    ``folder_fd``: removed through it, whatever is at its name now), the folders it made."""
    if temp and folder_fd is not None:
        fdpath.remove_tree(parent.fd, temp, folder_fd)
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
        if old and _kept_if_equal(parent.fd, name, sha, size, mode, ids):
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
            # A swap matters only where a user may change the folder. Where root alone can, the
            # name is another push's by now (two jobs, or two agents on one disk: the last
            # rename wins), and this one's copy was placed whole all the same.
            if parent.who and not fdpath.holds(parent.fd, name, fd):
                return _failed(E_SWAPPED.format(path=target))
        fdpath.fsync_dir(parent.fd)
    finally:
        if not placed:
            _undo(parent, temp)
    if attrs_error:
        return _failed(attrs_error)
    return _done(TransferOutcome.VERIFIED, DETAIL_VERIFIED, sha, written, owner)


def _kept_if_equal(dir_fd: int, name: str, sha: str, size: int, mode, ids) -> bool:
    """Whether the file ``name`` already has the pushed content and may stay; if so it gets the
    mode and owner asked for, through the file as opened (a link is never equal, nor followed).
    Another name for the same file (a hard link), another user's file or a writer who would
    lose that right (_keepable), and it is replaced by a new copy instead. Sizes are compared
    first: a user's sparse terabyte at the name is not read through."""
    fd = fdpath.open_inside(dir_fd, name)
    if fd is None:
        return False
    try:
        st = os.fstat(fd)
        if not (st.st_nlink == 1 and st.st_size == size and _keepable(st, mode, ids)):
            return False
        if _digest(fd) != sha:
            return False
        _set_attrs(fd, mode, ids)
        return True
    finally:
        os.close(fd)


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
    work, work_fd, old_fd, placed = None, None, None, False
    try:
        old = fdpath.lstat_in(pfd, name)
        if old and not stat.S_ISDIR(old.st_mode):
            return _failed(E_NOT_DIR.format(path=target))
        if old and _tree_kept_if_equal(pfd, name, files, mode, ids, target):
            return _done(TransferOutcome.SKIPPED, DETAIL_SKIPPED, sha, size, owner)
        # Everything happens in a folder of root's alone, the spool included: no other user can
        # see, swap or hold anything of it before it is complete and given its owner.
        work_fd, work = fdpath.make_temp_dir(pfd, name, parent.path)
        with os.fdopen(fdpath.spool_in(work_fd), "w+b") as spool:
            get_blob(client, manifest, spool)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:") as tar:
                members = tar.getmembers()
                if problem := unsafe_member(members):  # all checked before anything is written
                    return _failed(E_UNSAFE_MEMBER.format(name=problem[0], reason=problem[1]))
                _extract(tar, members, work_fd, ids)
        _set_attrs(work_fd, mode, ids, old, NEW_DIR_MODE)  # last: now others may enter it
        if old:
            # Held open, so that what is removed below is the old tree, whatever is at its
            # names by then. Two renames, not atomic: dest is briefly absent. Linux's
            # renameat2(RENAME_EXCHANGE) would close the gap; the stdlib has no binding for it.
            old_fd = fdpath.open_inside(pfd, name, folder=True)
            aside = f".{name}.cmdb-old-{fdpath.temp_suffix()}"
            os.rename(name, aside, src_dir_fd=pfd, dst_dir_fd=pfd)
            try:
                os.rename(work, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            except OSError:
                os.rename(aside, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                raise
            placed = True
            _remove_aside(pfd, aside, old_fd, target)
        else:
            os.rename(work, name, src_dir_fd=pfd, dst_dir_fd=pfd)
            placed = True
        if not fdpath.holds(pfd, name, work_fd):  # only where a user may change the folder
            return _failed(E_SWAPPED.format(path=target))
        fdpath.fsync_dir(pfd)
    finally:
        if old_fd is not None:
            os.close(old_fd)
        if not placed:
            _undo(parent, work, work_fd)
        if work_fd is not None:
            os.close(work_fd)
    return _done(TransferOutcome.VERIFIED, DETAIL_VERIFIED, sha, size, owner)


def _remove_aside(pfd: int, aside: str, old_fd: int | None, target) -> None:
    """Remove the old tree, renamed to ``aside``, through ``old_fd`` (fdpath.remove_tree); what
    cannot be removed that way stays, and the log says where."""
    where = os.path.join(os.path.dirname(target), aside)
    if old_fd is None or not fdpath.holds(pfd, aside, old_fd):
        logger.warning(W_ASIDE_SWAPPED, where)
    elif not fdpath.remove_tree(pfd, aside, old_fd):
        logger.warning(W_ASIDE_LEFT, where)


def _extract(tar: tarfile.TarFile, members, top: int, ids: tuple[int, int] | None) -> None:
    """Write the checked ``members`` into the open, empty folder ``top`` (root's alone, 0700),
    giving each file and link the owner asked for and each folder its own mode (as the data
    filter would, no group or other write: and never the umask's 0777).

    Through folder descriptors, not tarfile's paths: every entry is made relative to the folder
    it goes in, with O_EXCL | O_NOFOLLOW, so that nothing is ever followed, whatever the checks
    may have missed. Folders stay root's and 0700 until all is in, then get their mode and
    owner deepest first: nobody else can enter any of it before the caller gives ``top`` its
    own, last."""
    folders: dict[str, tuple[int, float | None]] = {}  # relpath: (mode, mtime)
    for m in members:
        parts = [p for p in posixpath.normpath(m.name).split("/") if p not in ("", ".")]
        if not parts:
            continue  # "." is ``top``: its mode and owner are the push's
        rel = "/".join(parts)
        try:
            here = _make_folders(top, parts[:-1], folders)
            try:
                _extract_member(tar, m, here, parts[-1], ids)
            finally:
                if here != top:
                    os.close(here)
        except (FileExistsError, NotADirectoryError):
            raise TransferError(E_UNSAFE_MEMBER.format(name=m.name, reason=R_CLASH)) from None
        if m.isdir():  # usable by its owner whatever the archive says, as files are
            folders[rel] = (m.mode & 0o755 | 0o700, m.mtime)
    for rel in sorted(folders, key=lambda r: r.split("/"), reverse=True):
        fd = fdpath.open_inside(top, rel, folder=True)
        if fd is None:  # nobody else can enter ``top``: not possible
            raise TransferError(fdpath.E_CHANGED.format(path=rel))
        try:
            if ids:
                os.fchown(fd, *ids)
            folder_mode, mtime = folders[rel]
            os.fchmod(fd, folder_mode)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)


def _make_folders(top: int, parts: list[str], folders: dict) -> int:
    """Open the folder ``parts`` under ``top``, making what is missing (0700 for now, and
    NEW_DIR_MODE in the end unless a member of its own says otherwise). The caller closes it."""
    here = top
    for depth, part in enumerate(parts, 1):
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o700, dir_fd=here)
            folders.setdefault("/".join(parts[:depth]), (NEW_DIR_MODE, None))
        try:
            opened = os.open(part, fdpath.DIR_FLAGS, dir_fd=here)
        finally:
            if here != top:
                os.close(here)
        here = opened
    return here


def _extract_member(tar, m: tarfile.TarInfo, here: int, name: str, ids) -> None:
    if m.isdir():
        with contextlib.suppress(FileExistsError):  # made before for a member inside it
            os.mkdir(name, 0o700, dir_fd=here)
        if not stat.S_ISDIR(os.stat(name, dir_fd=here, follow_symlinks=False).st_mode):
            raise FileExistsError(name)
    elif m.issym():
        os.symlink(m.linkname, name, dir_fd=here)
        if ids:  # by name, in a folder only root can reach: nothing can be swapped in
            os.chown(name, *ids, dir_fd=here, follow_symlinks=False)
    else:
        fd = os.open(name, os.O_WRONLY | fdpath.TEMP_FLAGS, 0o600, dir_fd=here)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(tar.extractfile(m), out, COPY_CHUNK)
            out.flush()
            if ids:
                os.fchown(fd, *ids)
            os.fchmod(fd, _file_mode(m.mode))
            os.utime(fd, (m.mtime, m.mtime))


def _file_mode(mode: int) -> int:
    """A file's mode from its archive, as tarfile's data filter has it: no set-id, sticky,
    group or other write bits, always readable and writable by its owner, and executable by
    group or others only if by its owner."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _tree_kept_if_equal(dir_fd: int, name: str, files, mode, ids, target) -> bool:
    """Whether the folder ``name`` already holds every file in ``files`` ({relpath: sha256}) and
    may stay; if so it gets the mode asked for. Looked at through open folders, following no
    link (a link on the way is never equal).

    Replaced by a new copy instead when anything in it is another user's (but the owner asked
    for), or a writer of anything in it would lose that right (_keepable); and when the owner
    asked for does not have it yet, but for listed files: their owner is set on the very file
    that was hashed, and only when it has no other name. Anything else may have been swapped in
    by whoever can change the folders (the owner asked for, say) between a look and a chown:
    root's file from their home, or a link that root's file is renamed over. Entries that are
    no part of the push (links, files not listed) stay as they are, and are not chowned."""
    top = fdpath.open_inside(dir_fd, name, folder=True)
    if top is None:
        return False
    listed = dict(files or {})
    try:
        st = os.fstat(top)
        if not (_keepable(st, mode, ids) and _has_owner(st, ids)):
            return False
        if any(unsafe_name(rel) for rel in listed):
            return False
        try:
            if not _entries_keepable(top, ids, listed, target):
                return False
            if not all(_listed_file_kept(top, rel, listed[rel], ids) for rel in listed):
                return False
        except OSError:  # changed while looked at (fdpath.Changed), or gone: a new copy is safe
            return False
        _set_attrs(top, mode, ids)
        return True
    finally:
        os.close(top)


def _entries_keepable(top: int, ids, listed: dict, target) -> bool:
    """_keepable for everything in the open folder; and, with an owner asked for, every folder
    must have it already (a folder cannot be checked as a file is, by its content)."""
    left = []
    for rel, _, name, st in fdpath.walk(top):
        path = posixpath.join(rel, name)
        if not _entry_keepable(st, ids):
            return False
        if not _has_owner(st, ids) and path not in listed:
            left.append(path)
    if left:
        where = ", ".join(os.path.join(target, path) for path in left)
        logger.warning(W_OWNER_LEFT, where)
    return True


def _entry_keepable(st: os.stat_result, ids) -> bool:
    if stat.S_ISLNK(st.st_mode):  # cannot be written; but another user's is still not ours
        return st.st_uid in (0, os.geteuid(), ids[0] if ids else 0)
    if stat.S_ISDIR(st.st_mode) and not _has_owner(st, ids):
        return False
    return _keepable(st, None, ids)


def _listed_file_kept(top: int, rel: str, digest: str, ids) -> bool:
    """Whether the listed file ``rel`` is equal and may stay; it gets the owner asked for then.
    The very inode hashed, with no other name: whatever it was before (root's file a user moved
    here, say), giving it to the owner is the same as placing a new copy of it."""
    fd = fdpath.open_inside(top, rel)
    if fd is None:
        return False
    try:
        st = os.fstat(fd)
        if st.st_nlink != 1 or not _keepable(st, None, ids) or _digest(fd) != digest:
            return False
        if not _has_owner(st, ids):
            os.fchown(fd, *ids)
        return True
    finally:
        os.close(fd)


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
        # Looked at through a descriptor before anything is read: what is checked is what is
        # read. Links are followed, unlike a push's: the operator may name /usr/bin/editor on
        # purpose, and what is read goes to the operator, not to a local user. But O_PATH first:
        # opening a device as root can do things (a tape rewinds, a modem dials), a fifo waits.
        fd, st = fdpath.open_regular(os.open(target, os.O_PATH | os.O_CLOEXEC))
        if fd is None:
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
