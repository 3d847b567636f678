"""Files fetched from hosts, on the server: stored verified, served only from where this project
alone writes, removed after their keeping time."""

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

from cmdb.access.actor import Actor
from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.trail import record
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from wire import blobs


def store_fetched(app, to: str, ip: str, remote_path: str, manifest: dict) -> str:
    """Write a fetched file to ``to/<ip>/<name>``, verified (get_blob checks the sha256);
    return the local path."""
    folder = Path(to) / ip
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (os.path.basename(remote_path.rstrip("/")) or "file")
    with redis_client(app) as client:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                blobs.get_blob(client, manifest, f)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        blobs.delete_blob(client, manifest)
    return str(target)


def remove_expired_fetches(fetch_dir: Path, keep_days: float, now: datetime) -> int:
    """Delete the server's copies of files fetched more than ``keep_days`` ago; return how many.

    Only under ``fetch_dir`` (the API's and the admin's): a CLI --to folder is the operator's.
    The host task keeps its record, with when the copy went (its download then answers 410).
    """
    if keep_days <= 0:
        return 0
    expired = HostTask.objects.filter(
        job__kind=JobKindChoices.FETCH,  # narrows the scan before the JSON lookups
        fetched__isnull=False,
        fetched__path__startswith=f"{fetch_dir}{os.sep}",
        finished_at__lt=now - timedelta(days=keep_days),
        fetched_removed_at__isnull=True,
    )
    removed = 0
    for task in expired.only("pk", "fetched"):
        path = Path(task.fetched["path"])
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):  # <ip>/, then <job id>/, once empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        HostTask.objects.filter(pk=task.pk).update(fetched_removed_at=now)
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


def record_download(actor: Actor, job: Job, tasks: list[HostTask], archive: bool = False):
    """The audit trail's entry for the server's copies of ``tasks``' files (of ``job``) sent
    to ``actor``, one by one or as one tar (``archive``). Recorded as the download is
    answered, before its bytes go out: a client that breaks off is in the trail too, which is
    better than a download that is not."""
    record(actor, AuditActionChoices.DOWNLOAD, kind=JobKindChoices.FETCH,
           targets_resolved=[t.ip for t in tasks], job=job,
           detail={"path": job.params.get("agent", {}).get("path", ""), "archive": archive,
                   "tasks": [t.task_id for t in tasks],
                   "sha256": [t.fetched.get("sha256", "") for t in tasks]})  # fmt: skip


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
