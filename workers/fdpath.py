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
machine, settings.root) an absolute link starts again at that root, the agent's "/".
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
import stat
from pathlib import Path
from typing import NamedTuple

from wire.blobs import UnsafePath

#: Mode of the folders a push makes on the way to its destination.
NEW_DIR_MODE = 0o755
#: How many links a walk follows before it gives up, as the kernel's own limit (ELOOP).
MAX_LINKS = 40
#: How many random temp names are tried before a transfer gives up.
TEMP_TRIES = 100

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a fifo would wait for a writer; O_NOCTTY: a tty must not become ours.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
TEMP_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

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
E_TOO_MANY_LINKS = "refused: more than {max} symbolic links on the way to {path}"
E_NOT_FOLDER = "{path} is not a folder"
E_NO_TEMP_NAME = "no free temporary name beside {path} after {tries} tries"
E_TEMP_SWAPPED = "refused: the new folder {path} was swapped for another user's before it was used"


def _user(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    return f"uid {uid}"


def _group(gid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    return f"gid {gid}"


def changers(st: os.stat_result) -> str | None:
    """Who, besides root and the agent's own user, can add, remove or rename entries in the
    folder ``st`` describes (and so swap one for a link); None when nobody can.

    The root group counts as root's. Group bits also show a POSIX ACL's mask, so a folder an
    ACL lets some user write reads as group-writable: refused too, which is right."""
    if st.st_uid not in (0, os.geteuid()):
        return f"user {_user(st.st_uid)}, who owns it"
    if st.st_mode & stat.S_ISVTX:
        return None  # sticky (/tmp): others add entries, but cannot remove or rename root's
    if st.st_mode & stat.S_IWOTH:
        return "every user, as it is world-writable"
    if st.st_mode & stat.S_IWGRP and st.st_gid not in (0, os.getegid()):
        return f"the members of group {_group(st.st_gid)}, as it is group-writable"
    return None


class _Folder(NamedTuple):
    fd: int
    path: str
    who: str | None  # changers(), when the push allowed it


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
    agent's, and are not looked at. A link is followed only in a folder nobody else can change
    and when root owns it, ``allow_unsafe`` or not: in a folder a user can change, the link
    could lead anywhere by the time it is used.
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
        stack = [_checked(top, base, allow_unsafe)]
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
                stack.append(_checked(fd, path, allow_unsafe))
                continue
            points_to = _trusted_link(here, name, path)
            links += 1
            if links > MAX_LINKS:
                raise UnsafePath(E_TOO_MANY_LINKS.format(max=MAX_LINKS, path=target))
            if points_to.startswith("/"):
                del stack[1:]
            pending[:0] = points_to.split("/")
        parent.fd, parent.path, parent.who = stack[-1]
        return parent
    except BaseException:
        parent.remove_made()
        parent.close()
        raise


def _checked(fd: int, path: str, allow_unsafe: bool) -> _Folder:
    who = changers(os.fstat(fd))
    if who and not allow_unsafe:
        raise UnsafePath(E_UNSAFE_PARENT.format(folder=path, who=who))
    return _Folder(fd, path, who)


def _trusted_link(here: _Folder, name: str, path: str) -> str:
    """What the link ``name`` in ``here`` points to, if only root could have made it; else
    UnsafePath (and for anything else that is no folder, a file say, UnsafePath too)."""
    st = os.stat(name, dir_fd=here.fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        raise UnsafePath(E_NOT_FOLDER.format(path=path))
    if here.who:
        why = f"in a folder that can be changed by {here.who}"
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
        if not stat.S_ISREG(os.stat(last, dir_fd=here, follow_symlinks=False).st_mode):
            return None
        return os.open(last, FILE_FLAGS, dir_fd=here)  # and the caller checks it again: fstat
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link, where O_NOFOLLOW refuses to go
            return None
        raise
    finally:
        for fd in fds:
            os.close(fd)


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


def make_temp_dir(dir_fd: int, name: str) -> tuple[int, str]:
    """A new folder of root's alone (0700) beside ``name``, open: (fd, its name)."""
    for _ in range(TEMP_TRIES):
        temp = f".{name}.cmdb-{temp_suffix()}"
        try:
            os.mkdir(temp, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        fd = os.open(temp, DIR_FLAGS, dir_fd=dir_fd)
        if os.fstat(fd).st_uid != os.geteuid():  # swapped for another's before it was opened
            os.close(fd)
            raise UnsafePath(E_TEMP_SWAPPED.format(path=temp))
        return fd, temp
    raise FileExistsError(E_NO_TEMP_NAME.format(path=name, tries=TEMP_TRIES))


def holds(dir_fd: int, name: str, fd: int) -> bool:
    """Whether ``name`` in ``dir_fd`` is the file or folder open as ``fd`` (after a rename: it
    was not swapped for something else on the way)."""
    st = lstat_in(dir_fd, name)
    return st is not None and os.path.samestat(st, os.fstat(fd))


def path_of(fd: int, fallback: str) -> str:
    """A path that reaches the folder open as ``fd`` whatever happens to the names above it
    (Linux's /proc/self/fd), for code that takes only paths (tarfile); else ``fallback``."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.isdir(proc) else fallback


def fsync_dir(fd: int) -> None:
    """Make a rename durable; not possible everywhere, and not worth a failure."""
    with contextlib.suppress(OSError):
        os.fsync(fd)
