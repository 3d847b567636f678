"""Placing a push on an ssh-mode host as the agent places it (workers.placing): a file, or a
folder as one archive unpacked on the host, through a private folder beside the target, its
sha256 computed on the host before anything is renamed in; skipped when already equal.

Each step is a phase of one POSIX sh script (gateway.host_script) that walks to the target's
folder with the agent's rules for who may change the folders on the way; the decisions that
need no shell (is it equal, may it stay, what does a new copy inherit) are made here.

The upload is the place phase's stdin, written by the script from inside the private folder
it walked to and holds (never by a path from "/", which a user who can change a folder on the
way, where the push allows that, could redirect), and checked there before anything is renamed
in: what is put in place is what was pushed, or nothing is.
"""

import asyncio
import contextlib
import os
import posixpath
import re
import shlex
import tarfile
from dataclasses import dataclass

import asyncssh

from gateway.host_script import SCRIPT
from wire.archive import E_UNSAFE_MEMBER, unsafe_member
from workers import fdpath
from workers import placing as agent

E_NOT_ABSOLUTE = "target path {path!r} is not an absolute file path"
E_ODD_NAME = "target path {path!r} has a tab or a newline in it: refused over SSH"
E_BAD_OWNER = "owner {owner!r} is not user, user:group or :group (names or numbers)"
E_NO_FOLDER = (
    "{path} is missing, not a folder, or not one the ssh user can enter (over SSH a push "
    "makes no folders on the way: make it first)"
)
E_TARGET_LINK = (
    "refused: {path} is a symbolic link; a push over SSH never follows or replaces one (name "
    "what it leads to instead)"
)
E_TEMP = "could not make a private folder beside {path} on the host: {reason}"
E_TEMP_WHAT = "not the ssh user's own 0700 folder with only the upload in it"
E_HOST_MISMATCH = "sha256 on the host is {got!r}, not {sha}: not put in place (old one kept)"
E_UPLOAD = "could not write the upload to {path} on the host"
E_TAR = "the host's tar could not unpack the archive (old folder kept): {reason}"
E_CHOWN_NOT_ROOT = (
    "owner {owner!r} not set: the ssh user (uid {uid}) is not root, and chown said: {reason}; "
    "nothing was changed on the host"
)
E_CHOWN = "owner {owner!r} not set: chown said: {reason}; nothing was changed on the host"
E_MODE = "could not set mode {mode} on the host; nothing was changed there"
E_MOVE = "could not rename the new copy to {path} (the old one is kept)"
E_SCRIPT = "the placing script on the host said nothing it should ({out!r}, exit {code})"
DETAIL_SKIPPED = agent.DETAIL_SKIPPED
DETAIL_VERIFIED = "sha256 verified on the host"
E_TOO_MUCH = "the host said more than {limit} bytes in the {phase} phase: not read further"
#: Bytes of output read from a phase at most (a folder's manifest: about 100 a file).
MAX_OUTPUT = 256 << 20
R_TRAILING = "data after the end of the archive (a header tarfile could not read?)"

OWNER = re.compile(r"(?=.)([A-Za-z0-9_][A-Za-z0-9_.-]*)?(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
#: Mode of a new file or folder when neither the push nor an old one says (as the agent's).
NEW_MODE = {"file": agent.NEW_FILE_MODE, "tree": fdpath.NEW_DIR_MODE}


class Refused(Exception):
    """The host's script, or a check before it, refused: the text says why."""


@dataclass(frozen=True)
class Old:
    """What is at the target now, as `stat` said."""

    uid: int
    gid: int
    nlink: int
    mode: int
    size: int
    regular: bool


@dataclass
class Look:
    parent: str  # the target's folder, physical
    me: int
    my_gid: int
    owner_ids: tuple[int | None, int | None]
    below_unsafe: bool  # below a folder others can change (allowed)
    old: Old | None
    temp: str
    sha: str | None = None  # of the old file, when its size is the push's
    not_keepable: int = 0  # entries in the old folder another user owns or can change
    manifest: dict | None = None  # {"./relpath": sha256} of the old folder's files


def check_archive(path: str) -> None:
    """The checks the agent makes before it extracts (wire.archive), made before anything is
    sent: the host's tar then unpacks only what passed them."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
            end = tar.offset
    except tarfile.TarError as exc:
        raise Refused(agent.E_BAD_ARCHIVE.format(reason=exc)) from None
    # tarfile ends quietly at a header it cannot read, where GNU tar skips to the next one: past
    # its end only the zeros of the end blocks, or the host's tar unpacks what was not checked.
    with open(path, "rb") as f:
        f.seek(end)
        while block := f.read(1 << 16):
            if block.strip(b"\0"):
                raise Refused(agent.E_BAD_ARCHIVE.format(reason=R_TRAILING))
    if problem := unsafe_member(members):
        raise Refused(E_UNSAFE_MEMBER.format(name=problem[0], reason=problem[1]))


async def push(conn, fetch, dest: str, *, tree: bool, sha: str, size: int,
               mode: int | None, owner: str | None, allow_unsafe: bool,
               files: dict | None) -> tuple[str, str]:  # fmt: skip
    """Put the file (or archive of a folder, ``tree``) that ``fetch()`` brings onto the
    gateway's disk (its path; called in a thread, only when the host's copy is not already
    equal) at ``dest``: ("skipped" | "verified" | "failed", detail)."""
    try:
        kind = "tree" if tree else "file"
        dest = _checked_dest(dest)
        if owner and not OWNER.fullmatch(owner):
            raise Refused(E_BAD_OWNER.format(owner=owner))
        args = _Args(kind, dest, allow_unsafe, owner or "", sha, size)
        look = _look(await _phase(conn, args, "look", owner=args.owner))
        args.temp = look.temp
        try:
            if _equal(look, kind, sha, size, mode, files):
                _done(await _phase(conn, args, "keep", owner=owner or "", mode=mode), "K")
                return "skipped", DETAIL_SKIPPED
            local = await asyncio.to_thread(fetch)
            if tree:
                check_archive(local)  # before any of it is sent
            new_mode, top_owner = _inherited(look, kind, mode, owner)
            placed = await _phase(conn, args, "place", owner=owner or "", mode=new_mode,
                                  top_owner=top_owner, stdin=local)  # fmt: skip
            _done(placed, "V")
            return "verified", DETAIL_VERIFIED
        except Exception:
            # The phases remove the private folder themselves; a failed fetch did not.
            if args.temp:
                with contextlib.suppress(Refused):
                    await _phase(conn, args, "drop")
            raise
    except Refused as exc:
        return "failed", str(exc)


def _checked_dest(dest: str) -> str:
    if not isinstance(dest, str) or not dest.startswith("/") or "\0" in dest:
        raise Refused(E_NOT_ABSOLUTE.format(path=dest))
    if "\t" in dest or "\n" in dest:
        raise Refused(E_ODD_NAME.format(path=dest))
    dest = posixpath.normpath(dest)
    if posixpath.basename(dest) in ("", ".", ".."):
        raise Refused(E_NOT_ABSOLUTE.format(path=dest))
    return dest


@dataclass
class _Args:
    kind: str
    dest: str
    allow_unsafe: bool
    owner: str
    sha: str
    size: int
    temp: str = ""


async def _phase(conn, args: _Args, phase: str, owner: str = "", mode: int | None = None,
                 top_owner: str = "", stdin: str | None = None):  # fmt: skip
    argv = [phase, args.kind, args.dest, "1" if args.allow_unsafe else "0", owner, args.temp,
            args.sha, str(args.size), "" if mode is None else f"{mode:o}", top_owner]  # fmt: skip
    command = " ".join(["exec /bin/sh -c", shlex.quote(SCRIPT), "cmdb-place",
                        *map(shlex.quote, argv)])  # fmt: skip
    try:
        # Bytes both ways: the upload is binary (and what comes back is decoded here).
        async with conn.create_process(command, encoding=None,
                                       stdin=asyncssh.DEVNULL if stdin is None else stdin
                                       ) as proc:  # fmt: skip
            try:
                said = await asyncio.gather(_capped(proc.stdout, phase),
                                            _capped(proc.stderr, phase))  # fmt: skip
                await proc.wait()
            finally:
                proc.close()
            status = proc.exit_status
    except (OSError, asyncssh.Error) as exc:
        raise Refused(f"the SSH session for {phase} failed: {exc}") from None
    stdout, stderr = (os.fsdecode(out) for out in said)
    lines = [line.split("\t") for line in stdout.splitlines()]
    for fields in lines:
        if fields[0] == "E":
            raise Refused(_worded(fields[1:], args))
    if status != 0:
        raise Refused(E_SCRIPT.format(out=(stderr or stdout)[-500:],
                                      code=status))  # fmt: skip
    return lines


async def _capped(stream, phase: str) -> bytes:
    """All of ``stream``, up to MAX_OUTPUT (a host may send without end)."""
    got = bytearray()
    while chunk := await stream.read(1 << 16):
        got += chunk
        if len(got) > MAX_OUTPUT:
            raise Refused(E_TOO_MUCH.format(phase=phase, limit=MAX_OUTPUT))
    return bytes(got)


def _worded(fields: list[str], args: _Args) -> str:
    """The message for what the host's script refused, the agent's words where it has them."""
    code, rest = fields[0], fields[1:] + [""] * 3
    path = rest[0]
    return {
        "UNSAFE": lambda: fdpath.E_UNSAFE_PARENT.format(folder=path, who=rest[1]),
        "LINK": lambda: fdpath.E_UNTRUSTED_LINK.format(path=path, why=rest[1]),
        "OTHERFS": lambda: fdpath.E_OTHER_FS.format(path=path, folder=rest[1], who=rest[2]),
        "LOOP": lambda: fdpath.E_TOO_MANY_LINKS.format(max=fdpath.MAX_LINKS, path=path),
        "NOFOLDER": lambda: E_NO_FOLDER.format(path=path),
        "CHANGED": lambda: fdpath.E_CHANGED.format(path=path),
        "GONE": lambda: fdpath.E_CHANGED.format(path=path),
        "OWNER": lambda: agent.E_UNKNOWN_OWNER.format(owner=path),
        "TARGETLINK": lambda: E_TARGET_LINK.format(path=path),
        "ISDIR": lambda: agent.E_IS_DIR.format(path=path),
        "NOTDIR": lambda: agent.E_NOT_DIR.format(path=path),
        "TEMP": lambda: E_TEMP.format(path=path, reason=rest[1]),
        "TEMPSWAP": lambda: fdpath.E_TEMP_SWAPPED.format(path=path, what=E_TEMP_WHAT),
        "UPLOAD": lambda: E_UPLOAD.format(path=path),
        "SHA": lambda: E_HOST_MISMATCH.format(got=path, sha=args.sha),
        "TAR": lambda: E_TAR.format(reason=path.strip()),
        "CHOWN": lambda: (E_CHOWN if rest[1] == "0" else E_CHOWN_NOT_ROOT).format(
            owner=path, uid=rest[1], reason=rest[2].strip()),
        "MODE": lambda: E_MODE.format(mode=path),
        "MOVE": lambda: E_MOVE.format(path=path),
        "SWAPPED": lambda: agent.E_SWAPPED.format(path=path),
    }.get(code, lambda: E_SCRIPT.format(out="\t".join(fields), code=2))()  # fmt: skip


def _look(lines: list[list[str]]) -> Look:
    found = {fields[0]: fields[1:] for fields in lines if fields[0] in ("P", "O", "H", "X", "T")}
    if "P" not in found or "T" not in found:
        raise Refused(E_SCRIPT.format(out=lines, code=0))
    parent, me, gid, au, ag, below = (found["P"] + [""] * 6)[:6]
    old = None
    if "O" in found:
        uid, ogid, nlink, mode, size, kind = found["O"][0].split(" ")
        old = Old(int(uid), int(ogid), int(nlink), int(mode, 8), int(size), kind == "f")
    manifest = {}
    for fields in lines:
        if fields[0] == "M" and not fields[1].startswith("\\"):  # "\": a name sha256sum escaped
            digest, _, rel = fields[1].partition("  ")
            manifest[rel] = digest
    return Look(
        parent=parent, me=int(me), my_gid=int(gid),
        owner_ids=(int(au) if au else None, int(ag) if ag else None), below_unsafe=below == "1",
        old=old, temp=found["T"][0], sha=found.get("H", [None])[0],
        not_keepable=int(found.get("X", ["0"])[0]), manifest=manifest if "X" in found else None,
    )  # fmt: skip


def _keepable(old: Old, look: Look, mode: int | None) -> bool:
    """workers.placing._keepable, for the ssh user: not another user's (but the owner asked
    for), not writable by anyone who would lose that right."""
    asked_uid, asked_gid = look.owner_ids
    if old.uid not in (0, look.me, asked_uid):
        return False
    gid = old.gid if asked_gid is None else asked_gid
    new_mode = old.mode if mode is None else mode
    group_keeps = bool(new_mode & 0o020) and gid == old.gid
    if old.mode & 0o020 and old.gid not in (0, look.my_gid) and not group_keeps:
        return False
    return not (old.mode & 0o002 and not new_mode & 0o002)


def _equal(look: Look, kind: str, sha: str, size: int, mode, files: dict | None) -> bool:
    """Whether what is at the target already is the push and may stay as it is. Never below a
    folder others can change: the script does not read there (a name may be swapped between a
    look and a chmod)."""
    old = look.old
    if old is None or look.below_unsafe or not _keepable(old, look, mode):
        return False
    if kind == "file":
        return old.regular and old.nlink == 1 and old.size == size and look.sha == sha
    asked_uid, asked_gid = look.owner_ids
    if asked_uid not in (None, old.uid) or asked_gid not in (None, old.gid):
        return False  # kept only when it has the owner already: nothing to chown in place
    if look.manifest is None or look.not_keepable:
        return False
    return all(look.manifest.get(f"./{rel}") == digest for rel, digest in (files or {}).items())


def _inherited(look: Look, kind: str, mode: int | None, owner: str | None):
    """(mode, owner of the file or top folder alone) of the new copy: the mode asked for, else
    those of the old one it replaces when it is root's or the ssh user's own with no other name
    (workers.placing._inherited: as editing it would have left them), else NEW_MODE and the
    ssh user's. An owner asked for is the whole copy's, and nothing is inherited then."""
    old = look.old
    usable = old is not None and old.uid in (0, look.me) and (kind == "tree" or old.nlink == 1)
    if usable and kind == "file":
        usable = old.regular
    if not usable:
        return (NEW_MODE[kind] if mode is None else mode), ""
    kept = old.mode if old.uid == 0 and look.me == 0 else old.mode & 0o777
    top_owner = f"{old.uid}:{old.gid}" if not owner and look.me == 0 else ""
    return (kept if mode is None else mode), top_owner


def _done(lines: list[list[str]], code: str) -> None:
    if not any(fields[0] == code for fields in lines):
        raise Refused(E_SCRIPT.format(out=lines, code=0))
