"""Reaching a push's destination through open folders: from the agent's root down one name at a
time, no folder reached through a link a user other than root could have made, and a folder such
a user can change refused unless the push allows it.

Why: the agent runs as root, and every call that takes a path looks it up again. A local user who
can change a folder on the way can swap an entry between two calls: a link to /etc/shadow for the
temp file (root's chmod then makes it world-readable), or ``~/.config`` made a link to
/etc/cron.d (root then writes a file of the user's choosing there). A folder held open stays the
one that was checked; every later step names entries relative to it (``dir_fd``), never by path.

Links on the way are followed when only root could have made them (/lib -> usr/lib on a merged
/usr), and what they lead to is walked the same way. Under an agent root (several agents on one
machine, settings.root) an absolute link starts again at that root, the agent's "/". Below a
folder a user can change (allowed by the push), no link is followed at all, and no other file
system entered: whatever is below it may have been put there by that user.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import posixpath
import pwd
import secrets
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from wire.blobs import TransferError, UnsafePath

#: Mode of the folders a push makes on the way to its destination.
NEW_DIR_MODE = 0o755
#: How many links a walk follows before it gives up, as the kernel's own limit (ELOOP).
MAX_LINKS = 40
#: How many random temp names are tried before a transfer gives up.
TEMP_TRIES = 100
#: How deep remove_tree goes (one open folder per level): a user can nest folders deeper than
#: the agent has descriptors; what is below stays, and says so.
MAX_REMOVE_DEPTH = 256

# O_NONBLOCK: opening a fifo would wait for a writer (O_DIRECTORY refuses one anyway, before it
# is opened); O_NOCTTY: a tty must not become ours.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
TEMP_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_PATH opens nothing: no device, fifo or tty sees an open() until fstat says it is a file.
PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
REOPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

#: The xattr a folder's POSIX access ACL is stored in, and its tags (linux/posix_acl_xattr.h).
ACL_XATTR = "system.posix_acl_access"
ACL_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
ACL_WRITE = 2

E_UNSAFE_PARENT = (
    "refused: the folder {folder} can be changed by {who}: they could swap what this push writes "
    "there for a link to any file on the host (/etc/shadow, say) and so take that file over as "
    "root. Push to a folder that only root can change or, if that is fine, allow it: "
    "`manage.py push --allow-unsafe-parents`, or allow_unsafe_parents in the API"
)
E_UNTRUSTED_LINK = (
    "refused: {path} is a symbolic link {why}, and a push never follows such a link, even with "
    "allow_unsafe_parents (it could lead to /etc/cron.d, or anywhere); name the folder it leads "
    "to instead"
)
E_OTHER_FS = (
    "refused: {path} is on another file system than {folder}, which can be changed by {who}: a "
    "push never enters one below such a folder, even with allow_unsafe_parents (the user may "
    "have mounted it there, with FUSE say, and then decide what every file in it is)"
)
E_TOO_MANY_LINKS = "refused: more than {max} symbolic links on the way to {path}"
E_NOT_FOLDER = "{path} is not a folder"
E_NO_TEMP_NAME = "no free temporary name beside {path} after {tries} tries"
E_TEMP_SWAPPED = (
    "refused: the new folder {path} was swapped for another before it was used (what is there "
    "now is {what}, not an empty folder of root's alone): someone who can change the folder it "
    "is in is racing this push"
)
E_CHANGED = "{path} changed while it was being looked at"
E_NO_PROC = (
    "/proc is not mounted: the agent reopens what it checked through /proc/self/fd (so that "
    "what it checked is what it reads), and refuses to read or write anything without it"
)
W_ACL_UNREADABLE = "whoever its POSIX ACL names (the ACL could not be read: {why})"
W_ACL = "{who}, as a POSIX ACL lets them write it"


class Changed(OSError):
    """A folder was changed (swapped, moved) while the agent was looking at it."""


def _user(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    return f"uid {uid}"


def _group(gid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    return f"gid {gid}"


def _other_members(gid: int) -> list[str]:
    """The users of group ``gid`` other than root and the agent's own: those listed in it and
    those whose primary group it is (some systems give gid 0 to "operator" or "sync")."""
    ours = (0, os.geteuid())
    names = set()
    with contextlib.suppress(KeyError):
        for name in grp.getgrgid(gid).gr_mem:
            try:
                if pwd.getpwnam(name).pw_uid not in ours:
                    names.add(name)
            except KeyError:
                names.add(name)  # a member with no account here: counted, not guessed at
    names.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid not in ours)
    return sorted(names)


def _group_writers(gid: int) -> str | None:
    """Group ``gid`` as changers() names it, when it has members who are neither root nor the
    agent itself; None when it has none. Root's group (and the agent's own) counts as root's
    only while nobody else is in it."""
    if gid not in (0, os.getegid()):
        return _group(gid)
    members = _other_members(gid)
    return f"{_group(gid)}, {' and '.join(members)} among them" if members else None


def parse_acl(data: bytes) -> list[tuple[int, int, int]]:
    """The (tag, perm, id) entries of a POSIX ACL as Linux stores it in an xattr: a 4-byte
    version, then 8 bytes an entry (u16 tag, u16 perm, u32 id), little-endian. ValueError when
    it is not one."""
    if len(data) < 4 or (len(data) - 4) % 8:
        raise ValueError(f"{len(data)} bytes is not a whole number of ACL entries")
    (version,) = struct.unpack_from("<I", data)
    if version != ACL_VERSION:
        raise ValueError(f"unknown ACL version {version}")
    return list(struct.iter_unpack("<HHI", data[4:]))


def acl_writers(entries: list[tuple[int, int, int]]) -> list[str]:
    """Who the named entries of an ACL let write, besides root and the agent (as changers()
    says them). The mask limits every named entry; the owner, owning group and others are in
    the mode bits, looked at apart."""
    mask = next((perm for tag, perm, _ in entries if tag == ACL_MASK), 0o7)
    who = []
    for tag, perm, ident in entries:
        if not perm & mask & ACL_WRITE:
            continue
        if tag == ACL_USER and ident not in (0, os.geteuid()):
            who.append(f"user {_user(ident)}")
        elif tag == ACL_GROUP and (group := _group_writers(ident)):
            who.append(f"the members of group {group}")
    return who


def read_acl(fd: int) -> bytes | None:
    """The POSIX access ACL of the open file or folder ``fd``, or None when it has none (or its
    file system has no ACLs)."""
    try:
        return os.getxattr(fd, ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def changers(st: os.stat_result, acl: bytes | None = None) -> str | None:
    """Who, besides root and the agent's own user, can add, remove or rename entries in the
    folder ``st`` describes (and so swap one for a link); None when nobody can. ``acl`` is its
    POSIX access ACL (read_acl), if it has one: its named users and groups count too.

    The root group counts as root's while nobody else is in it."""
    if st.st_uid not in (0, os.geteuid()):
        return f"user {_user(st.st_uid)}, who owns it"
    if st.st_mode & stat.S_ISVTX:
        return None  # sticky (/tmp): others add entries, but cannot remove or rename root's
    if st.st_mode & stat.S_IWOTH:
        return "every user, as it is world-writable"
    # With an ACL the group bits are its mask, so this is true whenever a named entry may
    # write: too strict at worst (the named entries are looked at below).
    if st.st_mode & stat.S_IWGRP and (group := _group_writers(st.st_gid)):
        return f"the members of group {group}, as it is group-writable"
    if acl is None:
        return None
    try:
        who = acl_writers(parse_acl(acl))
    except ValueError as exc:
        return W_ACL_UNREADABLE.format(why=exc)
    return W_ACL.format(who=" and ".join(who)) if who else None


class _Unsafe(NamedTuple):
    """The highest folder on the way that a user can change, as the push allowed."""

    path: str
    who: str
    dev: int


class _Folder(NamedTuple):
    fd: int
    path: str
    who: str | None  # changers() of this folder, when the push allowed it
    below: _Unsafe | None  # the folder (this one, or one above) a user can change


class Parent(contextlib.AbstractContextManager):
    """The open folder a destination goes in (``fd``; ``path`` for messages), as open_parent
    reached it, and the folders it made on the way, to take back if the transfer fails.
    Leaving the ``with`` block closes every folder it opened."""

    def __init__(self):
        self.fd, self.path, self.who = -1, "", None
        self.made: list[tuple[int, str]] = []  # (fd of the folder it was made in, name)
        self._fds: list[int] = []

    def remove_made(self) -> None:
        """Take back the folders made on the way (only those still empty: rmdir)."""
        for dir_fd, name in reversed(self.made):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=dir_fd)
        self.made.clear()

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _enter(self, dir_fd: int, name: str) -> int | None:
        """Open the folder ``name`` in ``dir_fd``, making it when missing; None when it is no
        folder (a link, a file: for the caller to look at)."""
        try:
            return self._keep(os.open(name, DIR_FLAGS, dir_fd=dir_fd))
        except NotADirectoryError:
            return None
        except FileNotFoundError:
            pass
        try:
            os.mkdir(name, NEW_DIR_MODE, dir_fd=dir_fd)
            self.made.append((dir_fd, name))
        except FileExistsError:
            # Made meanwhile by another transfer (two pushes, or two agents on one machine):
            # not ours to take back. What it is gets checked like any other folder.
            pass
        try:
            return self._keep(os.open(name, DIR_FLAGS, dir_fd=dir_fd))
        except NotADirectoryError:
            return None


def open_parent(root: str | None, target: Path, allow_unsafe: bool = False) -> Parent:
    """Open the folder ``target`` goes in, from ``root`` (or "/") down, making missing folders.

    Each folder, the root's included, is refused (UnsafePath) when a user other than root can
    change it, unless ``allow_unsafe``; folders above the root are the machine's, not the
    agent's, and are not looked at. A link is followed only when root owns it and no folder
    from the root down to it can be changed by anyone else, ``allow_unsafe`` or not: below such
    a folder, the link (or the folder of root's it is in) may have been put there by that user.
    """
    base = os.path.abspath(root) if root is not None else "/"
    pending = list(target.parent.relative_to(base).parts)
    parent = Parent()
    try:
        # The root itself is the agent's own setting: reached by path, links and all, and made
        # on first use (taken back with the rest if the transfer fails).
        anchor, missing = base, []
        while not os.path.isdir(anchor) and os.path.dirname(anchor) != anchor:
            anchor, name = os.path.split(anchor)
            missing.insert(0, name)
        top = parent._keep(os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        for name in missing:
            anchor = os.path.join(anchor, name)
            if (top := parent._enter(top, name)) is None:
                raise UnsafePath(E_NOT_FOLDER.format(path=anchor))
        stack = [_checked(top, base, allow_unsafe, None)]
        links = 0
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":  # from a link: the folder it was in, never above the root
                if len(stack) > 1:
                    stack.pop()
                continue
            here = stack[-1]
            path = os.path.join(here.path, name)
            fd = parent._enter(here.fd, name)
            if fd is not None:
                stack.append(_checked(fd, path, allow_unsafe, here.below))
                continue
            points_to = _trusted_link(here, name, path)
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath(E_TOO_MANY_LINKS.format(max=MAX_LINKS, path=target))
            if points_to.startswith("/"):
                del stack[1:]
            pending[:0] = points_to.split("/")
        parent.fd, parent.path, parent.who, _ = stack[-1]
        return parent
    except BaseException:
        parent.remove_made()
        parent.close()
        raise


def _checked(fd: int, path: str, allow_unsafe: bool, below: _Unsafe | None) -> _Folder:
    st = os.fstat(fd)
    who = changers(st, read_acl(fd))
    if who and not allow_unsafe:
        raise UnsafePath(E_UNSAFE_PARENT.format(folder=path, who=who))
    if below and st.st_dev != below.dev:
        raise UnsafePath(E_OTHER_FS.format(path=path, folder=below.path, who=below.who))
    if below is None and who:
        below = _Unsafe(path, who, st.st_dev)
    return _Folder(fd, path, who, below)


def _trusted_link(here: _Folder, name: str, path: str) -> str:
    """What the link ``name`` in ``here`` points to, if only root could have made it; else
    UnsafePath (and for anything else that is no folder, a file say, UnsafePath too)."""
    st = os.stat(name, dir_fd=here.fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        raise UnsafePath(E_NOT_FOLDER.format(path=path))
    if here.who:
        why = f"in a folder that can be changed by {here.who}"
        raise UnsafePath(E_UNTRUSTED_LINK.format(path=path, why=why))
    if here.below:  # the folder may be root's, but that user may have moved it there
        why = f"below {here.below.path}, which can be changed by {here.below.who}"
        raise UnsafePath(E_UNTRUSTED_LINK.format(path=path, why=why))
    if st.st_uid not in (0, os.geteuid()):  # in a sticky folder (/tmp) anyone makes links
        why = f"owned by user {_user(st.st_uid)}"
        raise UnsafePath(E_UNTRUSTED_LINK.format(path=path, why=why))
    return os.readlink(name, dir_fd=here.fd)


def lstat_in(dir_fd: int, name: str) -> os.stat_result | None:
    """The entry ``name`` itself (a link is not followed), or None when there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def path_of(fd: int) -> str:
    """A path that reaches what is open as ``fd`` whatever happens to the names above it
    (Linux's /proc/self/fd). Without /proc there is no such path, and no safe stand-in for
    one: TransferError."""
    if not os.path.isdir("/proc/self/fd"):
        raise TransferError(E_NO_PROC)
    return f"/proc/self/fd/{fd}"


def open_regular(path_fd: int) -> tuple[int | None, os.stat_result]:
    """Open for reading the file that ``path_fd`` (O_PATH, closed here) holds, if it is a
    regular file: (fd or None, its stat). Through /proc/self/fd, so it is that very file,
    whatever its name is now; and nothing else (a device, a fifo) is opened at all."""
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode):
            return None, st
        fd = os.open(path_of(path_fd), REOPEN_FLAGS)
    finally:
        os.close(path_fd)
    if not os.path.samestat(os.fstat(fd), st):  # cannot happen: the kernel's own reference
        os.close(fd)
        raise Changed(E_CHANGED.format(path=f"file {st.st_ino}"))
    return fd, st


def open_inside(dir_fd: int, relpath: str, folder: bool = False) -> int | None:
    """Open the regular file (or ``folder``) at ``relpath`` under ``dir_fd`` without following a
    link on the way or at the end; None when there is none there. Anything else is not opened
    at all: opening a device can do things (a tape rewinds)."""
    *folders, last = relpath.split("/")
    fds = []
    try:
        for name in folders:
            fds.append(os.open(name, DIR_FLAGS, dir_fd=fds[-1] if fds else dir_fd))
        here = fds[-1] if fds else dir_fd
        if folder:
            return os.open(last, DIR_FLAGS, dir_fd=here)
        return open_regular(os.open(last, PATH_FLAGS, dir_fd=here))[0]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link, where O_NOFOLLOW refuses to go
            return None
        raise
    finally:
        for fd in fds:
            os.close(fd)


def _open_listed(dir_fd: int, name: str, st: os.stat_result) -> int:
    """Open the folder ``name`` in ``dir_fd`` that lstat said ``st`` is; Changed if it is not
    (swapped for another folder in between)."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError) as exc:  # gone, or swapped for a link
        raise Changed(E_CHANGED.format(path=name)) from exc
    if not os.path.samestat(os.fstat(fd), st):
        os.close(fd)
        raise Changed(E_CHANGED.format(path=name))
    return fd


def walk(top: int) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """Every entry under the open folder ``top``, depth first: (the path of the folder it is
    in, relative to ``top``; that folder open; its name; its lstat). Each folder is opened
    relative to the one it is in, following no link and waiting on no fifo, and must be the
    one that was listed, on ``top``'s file system: else Changed. Nothing else is opened."""
    dev = os.fstat(top).st_dev
    stack = [("", top, iter(sorted(os.listdir(top))))]
    try:
        while stack:
            rel, here, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if here != top:
                    os.close(here)
                continue
            st = lstat_in(here, name)
            if st is None:
                continue
            yield rel, here, name, st
            if stat.S_ISDIR(st.st_mode):
                if st.st_dev != dev:
                    raise Changed(E_CHANGED.format(path=posixpath.join(rel, name)))
                child = _open_listed(here, name, st)
                try:
                    inside = iter(sorted(os.listdir(child)))
                    stack.append((posixpath.join(rel, name), child, inside))
                except BaseException:
                    os.close(child)
                    raise
    finally:
        for _, fd, _ in stack:
            if fd != top:
                os.close(fd)


class _Emptying(NamedTuple):
    fd: int
    names: Iterator[str]
    name: str  # in the folder above
    st: os.stat_result
    others: bool  # whether anyone else can change it (changers())


def _emptying(fd: int, name: str) -> _Emptying:
    st = os.fstat(fd)
    return _Emptying(fd, iter(os.listdir(fd)), name, st, changers(st, read_acl(fd)) is not None)


def remove_tree(dir_fd: int, name: str, fd: int) -> bool:
    """Remove the folder open as ``fd`` (``name`` in ``dir_fd``) and what it holds, through
    descriptors only (shutil.rmtree goes by name, and its open() may follow a link or wait on a
    fifo swapped in meanwhile); True when all of it is gone.

    The folder may be a user's, who may be changing it meanwhile: each subfolder is opened
    relative to its parent (no link followed, no fifo waited on) and must be the one listed;
    files and links are unlinked by name in the folder held open, never opened; a folder is
    removed by name only while that name is still the folder that was emptied. In a folder
    someone else can change, a subfolder of another owner than that folder's is left as it is
    (it may have been moved in from elsewhere, for root to empty on that someone's behalf), and
    so is one on another file system, anywhere.
    """
    dev = os.fstat(fd).st_dev
    stack = [_emptying(fd, name)]
    try:
        while stack:
            here = stack[-1]
            entry = next(here.names, None)
            if entry is None:
                stack.pop()
                if stack:
                    with contextlib.suppress(OSError):
                        if holds(stack[-1].fd, here.name, here.fd):
                            os.rmdir(here.name, dir_fd=stack[-1].fd)
                    os.close(here.fd)
                continue
            with contextlib.suppress(OSError):
                st = lstat_in(here.fd, entry)
                if st is None:
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(entry, dir_fd=here.fd)
                    continue
                moved_in = here.others and st.st_uid != here.st.st_uid
                if moved_in or st.st_dev != dev or len(stack) >= MAX_REMOVE_DEPTH:
                    continue
                child = _open_listed(here.fd, entry, st)
                try:
                    stack.append(_emptying(child, entry))
                except BaseException:
                    os.close(child)
                    raise
    finally:
        for here in stack[1:]:
            os.close(here.fd)
    with contextlib.suppress(OSError):
        if holds(dir_fd, name, fd):
            os.rmdir(name, dir_fd=dir_fd)
            return True
    return False


def temp_suffix() -> str:
    """The random part of a temp name (a function of its own, for the tests to choose)."""
    return secrets.token_hex(6)


def create_temp(dir_fd: int, name: str, flags: int = os.O_WRONLY) -> tuple[int, str]:
    """A new file of root's alone (0600) beside ``name``: (fd, its name). O_EXCL and O_NOFOLLOW:
    whatever already has the name (a link to /etc/shadow, say) is never opened; another name is
    tried instead."""
    for _ in range(TEMP_TRIES):
        temp = f".{name}.cmdb-{temp_suffix()}"
        try:
            return os.open(temp, flags | TEMP_FLAGS, 0o600, dir_fd=dir_fd), temp
        except FileExistsError:
            continue
    raise FileExistsError(E_NO_TEMP_NAME.format(path=name, tries=TEMP_TRIES))


def spool_in(dir_fd: int) -> int:
    """A file of root's alone in the folder ``dir_fd``, open for reading and writing and by no
    name (O_TMPFILE; where the file system has none, one made and unlinked at once)."""
    try:
        return os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    fd, temp = create_temp(dir_fd, "spool", os.O_RDWR)
    os.unlink(temp, dir_fd=dir_fd)
    return fd


def make_temp_dir(dir_fd: int, name: str, where: str = "") -> tuple[int, str]:
    """A new folder of root's alone (0700) beside ``name``, open: (fd, its name). ``where`` is
    the path of ``dir_fd``, for messages.

    Between mkdir and open, a user who can change the folder it is in can rename another folder
    over the new one (an old tree of root's that they can write, say): so what was opened must
    be empty, the agent's own and 0700 (no ACL can then let anyone else write it either)."""
    for _ in range(TEMP_TRIES):
        temp = f".{name}.cmdb-{temp_suffix()}"
        try:
            os.mkdir(temp, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        path = os.path.join(where, temp)
        try:
            fd = os.open(temp, DIR_FLAGS, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            raise UnsafePath(E_TEMP_SWAPPED.format(path=path, what="no folder at all")) from None
        st = os.fstat(fd)
        # nlink: an empty folder has 2 (btrfs says 1 for every folder); listdir sees the rest.
        entries = len(os.listdir(fd))
        alone = st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
        if not alone or st.st_nlink > 2 or entries:
            os.close(fd)
            what = (f"a folder of {_user(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}, "
                    f"with {entries} {'entry' if entries == 1 else 'entries'} in it")  # fmt: skip
            raise UnsafePath(E_TEMP_SWAPPED.format(path=path, what=what))
        return fd, temp
    raise FileExistsError(E_NO_TEMP_NAME.format(path=name, tries=TEMP_TRIES))


def holds(dir_fd: int, name: str, fd: int) -> bool:
    """Whether ``name`` in ``dir_fd`` is the file or folder open as ``fd`` (after a rename: it
    was not swapped for something else on the way)."""
    st = lstat_in(dir_fd, name)
    return st is not None and os.path.samestat(st, os.fstat(fd))


def fsync_dir(fd: int) -> None:
    """Make a rename durable; not possible everywhere, and not worth a failure."""
    with contextlib.suppress(OSError):
        os.fsync(fd)
