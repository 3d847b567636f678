"""The server's side of push and fetch: upload what is pushed, assemble what is fetched.

Files travel as content-addressed chunks through the broker's Redis (workers.transfer says
why); the agent task message carries only the manifest.
"""

import contextlib
import errno
import io
import os
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from workers import transfer

E_NO_SOURCE = "nothing to push at {path} (no such file or folder)"
E_BAD_MODE = "--mode {mode!r} is not an octal file mode such as 0644"


def broker_client(app):
    """kombu's Redis client for the broker, kept open by the caller's connection."""
    conn = app.connection_for_write()
    return conn, conn.default_channel.client


def parse_mode(mode: str | None) -> int | None:
    if mode is None:
        return None
    try:
        value = int(mode, 8)
    except ValueError:
        raise ValueError(E_BAD_MODE.format(mode=mode)) from None
    if not 0 <= value <= 0o7777:
        raise ValueError(E_BAD_MODE.format(mode=mode))
    return value


def prepare_push(
    app, source: str, dest: str, mode: str | None = None, owner: str | None = None
) -> dict:
    """Upload ``source`` (a file, or a folder as one archive); return the job's params."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(E_NO_SOURCE.format(path=source))
    if path.is_dir():
        archive, files = transfer.pack_tree(str(path))
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
            transfer.extract_checked(upload, folder, max_bytes=max_bytes)
            params = prepare_push(app, folder, dest, mode, owner)
    else:
        params = {"agent": _upload(app, upload, dest, mode, owner)}
    return {**params, "source": f"upload:{name}"}


def _upload(app, fileobj: BinaryIO, dest, mode, owner, files: dict | None = None) -> dict:
    """The agent's part of a push's params, once ``fileobj`` is in the broker's Redis."""
    agent = {"dest": dest, "mode": parse_mode(mode), "owner": owner, "tree": files is not None}
    if files is not None:
        agent["files"] = files
    conn, client = broker_client(app)
    with conn:
        agent["manifest"] = transfer.put_blob(client, fileobj)
    return agent


def store_fetched(app, to: str, ip: str, remote_path: str, manifest: dict) -> str:
    """Write a fetched file to ``to/<ip>/<name>``, verified (get_blob checks the sha256);
    return the local path."""
    folder = Path(to) / ip
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (os.path.basename(remote_path.rstrip("/")) or "file")
    conn, client = broker_client(app)
    with conn:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                transfer.get_blob(client, manifest, f)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        transfer.delete_blob(client, manifest)
    return str(target)


def release_finished_pushes(app) -> int:
    """Delete the blobs of push jobs that have ended: Redis is a broker, not a file store.

    A blob shared with a push still running (same content) is kept for that one, which
    releases it when it ends. Returns how many blobs were deleted.
    """
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.choices import JobKindChoices
    from cmdb.jobs.models import Job

    unreleased = Job.objects.filter(kind=JobKindChoices.PUSH).exclude(params__has_key="released")
    running = set(
        unreleased.filter(host_tasks__state__in=State.active()).values_list("pk", flat=True)
    )
    manifests = {j.pk: j.params.get("agent", {}).get("manifest") for j in unreleased}
    busy = {m["sha256"]: m for pk, m in manifests.items() if m and pk in running}
    if busy:
        # A long batched push must not outlive its chunks: keep them while it runs.
        conn, client = broker_client(app)
        with conn:
            for manifest in busy.values():
                transfer.keep_blob(client, manifest)
    released = 0
    quiet = int(os.environ.get("CMDB_BLOB_RELEASE_AFTER", "60"))
    for job in unreleased.exclude(pk__in=running):
        manifest = job.params.get("agent", {}).get("manifest")
        if manifest and manifest["sha256"] not in busy:
            conn, client = broker_client(app)
            with conn:
                # A push being prepared now reuses (and refreshes) the same blob before its
                # job exists: leave blobs touched within the last `quiet` seconds alone.
                if not transfer.release_blob(client, manifest, quiet):
                    continue
            released += 1
        job.params["released"] = True
        Job.objects.filter(pk=job.pk).update(params=job.params)
    return released


def remove_expired_fetches(fetch_dir: Path, keep_days: float, now: datetime) -> int:
    """Delete the server's copies of files fetched more than ``keep_days`` ago; return how many.

    Only under ``fetch_dir`` (the API's and the admin's): a CLI --to folder is the operator's.
    The host task keeps its record, with when the copy went (its download then answers 410).
    """
    from cmdb.jobs.models import HostTask

    if keep_days <= 0:
        return 0
    expired = HostTask.objects.filter(
        job__kind="fetch",  # narrows the scan before the JSON lookups
        fetched__isnull=False,
        fetched__path__startswith=f"{fetch_dir}{os.sep}",
        finished_at__lt=now - timedelta(days=keep_days),
    ).exclude(fetched__has_key="removed")
    removed = 0
    for task in expired.only("pk", "fetched"):
        path = Path(task.fetched["path"])
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):  # <ip>/, then <job id>/, once empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        HostTask.objects.filter(pk=task.pk).update(
            fetched={**task.fetched, "removed": now.isoformat()}
        )
        removed += 1
    return removed


class NotServed(Exception):
    """A fetched copy the web will not serve; the message says why."""


E_NOT_IN_FETCH_DIR = ("this copy was written to a folder given to the CLI (--to), which the web "
                      "does not serve; only copies under CMDB_FETCH_DIR are")  # fmt: skip
E_CHANGED_ON_SERVER = "the server's copy is no longer the file that was fetched; not served"


def open_fetched(fetched: dict, fetch_dir: Path) -> BinaryIO:
    """The server's copy of a fetched file, opened for sending, or NotServed / FileNotFoundError.

    Only under ``fetch_dir``, which this project alone writes: a CLI's --to folder may be
    shared, and a link put there could make the web send any file it can read (its own keys).
    The last component is opened without following a link, and must still be the regular file
    of the recorded size.
    """
    path = fetched.get("path") or ""
    if "removed" in fetched:
        raise FileNotFoundError(path)
    folder = os.path.realpath(os.path.dirname(path))
    if not folder.startswith(os.path.realpath(fetch_dir) + os.sep):
        raise NotServed(E_NOT_IN_FETCH_DIR)
    try:
        fd = os.open(os.path.join(folder, os.path.basename(path)), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotServed(E_CHANGED_ON_SERVER) from None
        raise
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != fetched.get("size"):
        f.close()
        raise NotServed(E_CHANGED_ON_SERVER)
    return f


def tar_stream(entries: Iterable[tuple[str, BinaryIO | bytes]], block: int = 1 << 20):
    """A tar of (name in the archive, open binary file or the content itself) entries, made as
    it is sent: headers and file blocks are yielded in turn, so that a web worker never holds
    more than ``block`` bytes of it (tarfile.addfile would write each file whole into whatever
    it is given). Entries are taken one at a time, so a lazy iterable opens one file at once;
    each file is closed once sent."""
    for name, source in entries:
        f = io.BytesIO(source) if isinstance(source, bytes) else source
        with f:
            size = len(source) if isinstance(source, bytes) else os.fstat(f.fileno()).st_size
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, int(time.time()), 0o644
            yield info.tobuf(tarfile.PAX_FORMAT)
            left = size
            while left > 0:  # exactly the size in the header, even if the file grew
                data = f.read(min(block, left))
                if not data:
                    raise OSError(f"{name} shrank while it was being sent")
                left -= len(data)
                yield data
            if size % tarfile.BLOCKSIZE:
                yield tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # the end-of-archive marker
