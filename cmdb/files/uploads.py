"""What the server sends hosts in a push: a file, or a folder packed as one checked archive,
put once into the broker's Redis (wire.blobs) however many hosts receive it."""

import errno
import hashlib
import lzma
import os
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

from cmdb.jobs.broker import redis_client
from wire import blobs
from wire.archive import E_UNSAFE_MEMBER, R_SPECIAL, unsafe_member
from wire.blobs import TransferError, UnsafePath

E_NO_SOURCE = "nothing to push at {path} (no such file or folder)"
E_NOT_DIR = "{path} is not a folder"
E_BAD_MODE = "mode {mode!r} is not an octal file mode such as 0644"
E_BAD_ARCHIVE = "not a readable tar archive: {reason}"
E_TOO_BIG = ("the archive unpacks to {size} bytes in {count} members; at most {max_bytes} "
             "bytes and {max_count} members")  # fmt: skip


def parse_mode(mode: str | None) -> int | None:
    """An octal mode as an operator writes it ("0644", "755"); ValueError saying why not."""
    if mode is None:
        return None
    try:
        value = int(mode, 8)
    except (TypeError, ValueError):
        raise ValueError(E_BAD_MODE.format(mode=mode)) from None
    if not 0 <= value <= 0o7777:
        raise ValueError(E_BAD_MODE.format(mode=mode))
    return value


def _within_limits(fileobj: BinaryIO, max_bytes: int, max_members: int) -> None:
    """Read the archive's headers as a stream, keeping none, and stop at the first member past
    a limit: a 2.4 MB tar.gz of a million empty members cost 218 MiB and 18 s to list whole."""
    fileobj.seek(0)
    count = total = 0
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            count += 1
            total += member.size if member.isreg() else 0
            if total > max_bytes or count > max_members:
                too_big = {"size": total, "count": count, "max_bytes": max_bytes,
                           "max_count": max_members}  # fmt: skip
                raise TransferError(E_TOO_BIG.format(**too_big))
            tar.members.clear()  # a stream needs none of the headers it has read
    fileobj.seek(0)


def extract_checked(
    fileobj: BinaryIO, folder: str, max_bytes: int = 1 << 40, max_members: int = 100_000
) -> None:
    """Extract a tar archive (plain, gzip, bzip2 or xz) into the empty ``folder``, after the
    member checks receive_tree makes: for a folder uploaded as an archive, refused before it is
    sent anywhere rather than by every host. A small compressed archive can unpack to
    terabytes: its members' total size and count are checked against the limits first, as a
    stream, before any of it is kept or written."""
    try:
        _within_limits(fileobj, max_bytes, max_members)
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            members = tar.getmembers()
            if problem := unsafe_member(members):
                raise UnsafePath(E_UNSAFE_MEMBER.format(name=problem[0], reason=problem[1]))
            tar.extractall(folder, members=members, filter="data")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # the server's disk, not the archive
        # Truncated or corrupt compressed data (gzip's and bz2's errors are OSErrors too).
        raise TransferError(E_BAD_ARCHIVE.format(reason=exc)) from None
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise TransferError(E_BAD_ARCHIVE.format(reason=exc or type(exc).__name__)) from None


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
    if problem := unsafe_member([info for info, _ in infos]):
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


def prepare_push(
    app, source: str, dest: str, mode: str | None = None, owner: str | None = None
) -> dict:
    """Upload ``source`` (a file, or a folder as one archive); return the job's params."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(E_NO_SOURCE.format(path=source))
    if path.is_dir():
        archive, files = pack_tree(str(path))
        with archive:
            agent = _upload(app, archive, dest, mode, owner, files=files)
    else:
        with open(path, "rb") as f:
            agent = _upload(app, f, dest, mode, owner)
    return {"agent": agent, "source": str(path.resolve())}


def prepare_upload(
    app,
    upload: BinaryIO,
    name: str,
    dest: str,
    mode: str | None = None,
    owner: str | None = None,
    archive: bool = False,
    max_bytes: int = 1 << 40,
) -> dict:
    """Like prepare_push, for a file received over HTTP (binary, seekable: Django spools large
    uploads to disk). ``archive``: it is a tar (any compression) of a folder to put at ``dest``;
    it is checked and unpacked here, so that an unsafe one is refused before it is sent."""
    if archive:
        with tempfile.TemporaryDirectory(prefix="cmdb-upload-") as folder:
            extract_checked(upload, folder, max_bytes=max_bytes)
            params = prepare_push(app, folder, dest, mode, owner)
    else:
        params = {"agent": _upload(app, upload, dest, mode, owner)}
    return {**params, "source": f"upload:{name}"}


def _upload(app, fileobj: BinaryIO, dest, mode, owner, files: dict | None = None) -> dict:
    """The agent's part of a push's params, once ``fileobj`` is in the broker's Redis."""
    agent = {"dest": dest, "mode": parse_mode(mode), "owner": owner, "tree": files is not None}
    if files is not None:
        agent["files"] = files
    with redis_client(app) as client:
        agent["manifest"] = blobs.put_blob(client, fileobj)
    return agent
