"""Whole outputs kept on the server (`run --keep-output`, CMDB_KEEP_OUTPUT): one file per
host task and stream, OUTPUT_DIR/<job id>/<task id>.stdout (and .stderr), written by fd from
the chunks the agent sent (cmdb.jobs.live), at their offsets, never through a symlink.
"""

import codecs
import contextlib
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings

from cmdb.access import visible
from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.trail import record
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from cmdb.jobs.render import printable
from cmdb.jobs.report import ip_order

logger = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
EXIT_OK, EXIT_NONE, EXIT_UNFINISHED = 0, 2, 3
#: How long --full waits for the last chunks of a task whose result was stored before them.
SETTLE = 5.0
E_NOT_KEPT = "job {job}: output not kept (run it with --keep-output, or set CMDB_KEEP_OUTPUT)"
E_NOT_FINISHED = "{ip}: still {state}; its output so far"
E_NO_OUTPUT = "{user} may not read output (that takes jobs.view_output)"


def kept_cap(task: HostTask) -> int:
    return int((task.job.params or {}).get("keep_output") or 0)


def output_dir():
    return settings.CMDB["OUTPUT_DIR"]


E_UNSAFE = "{what}: not ours alone (owner {uid}, mode {mode:o}); kept output not used"


def _ours(fd: int, what: str, folder: bool) -> int:
    """``fd`` if what it names is owned by us and no one else may write it (a folder: nor read
    it, mode 0700; a file: no other link to it, which someone could have made to one of ours
    or to another file), else PermissionError."""
    st = os.fstat(fd)
    bad = st.st_uid != os.geteuid() or (
        st.st_mode & 0o077 if folder else (st.st_mode & 0o022 or st.st_nlink != 1)
    )
    if bad:
        os.close(fd)
        raise PermissionError(E_UNSAFE.format(what=what, uid=st.st_uid, mode=st.st_mode & 0o7777))
    return fd


def _open_job_dir(job_id, create: bool) -> int:
    """An fd on OUTPUT_DIR/<job id>, made when ``create``; never through a symlink, and only
    folders of ours alone (0700)."""
    base = str(output_dir())
    if create:
        os.makedirs(base, mode=0o700, exist_ok=True)
    base_fd = _ours(os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), base, True)
    try:
        name = str(job_id)
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=base_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=base_fd)  # fmt: skip
        return _ours(fd, f"{base}/{name}", True)
    finally:
        os.close(base_fd)


def room(fd: int) -> bool:
    """Whether the disk under ``fd`` has more than CMDB_OUTPUT_MIN_FREE_BYTES free: kept output
    must not fill the disk the database or the broker may share."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize > settings.CMDB["OUTPUT_MIN_FREE_BYTES"]


def keep(task: HostTask, stream: str, at: int, data: bytes) -> None:
    """Write ``data`` at ``at`` of the task's kept stream: by offset, so a chunk that comes twice
    writes the same bytes again, and the file is whole once every chunk has come."""
    try:
        dir_fd = _open_job_dir(task.job_id, create=True)
        try:
            if not room(dir_fd):
                logger.warning("output of %s not kept: under CMDB_OUTPUT_MIN_FREE_BYTES free in "
                               "CMDB_OUTPUT_DIR", task.task_id)  # fmt: skip
                return
            name = f"{task.task_id}.{stream}"
            fd = _ours(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o600, dir_fd=dir_fd), name, False)  # fmt: skip
        finally:
            os.close(dir_fd)
        try:
            os.pwrite(fd, data, at)
        finally:
            os.close(fd)
    except OSError:
        logger.exception("could not keep the %s of %s", stream, task.task_id)


def remove_expired(keep_days: float, now: datetime) -> int:
    """Remove the kept outputs of jobs created more than ``keep_days`` ago (and folders of no
    job, as old); return how many job folders went. By fd, never through a symlink."""
    if keep_days <= 0:
        return 0
    cutoff = now - timedelta(days=keep_days)
    try:
        base_fd = os.open(str(output_dir()), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    removed = 0
    try:
        names = {e.name: e for e in os.scandir(base_fd) if e.is_dir(follow_symlinks=False)}
        ids = {}
        for name in names:
            with contextlib.suppress(ValueError):
                ids[name] = uuid.UUID(name)
        jobs = Job.objects.filter(pk__in=list(ids.values()))
        created = {str(pk): at for pk, at in jobs.values_list("pk", "created")}
        for name, entry in names.items():
            when = created.get(str(ids.get(name)))
            if when is None:  # no such job: by the folder's age (a job being dispatched now)
                when = datetime.fromtimestamp(entry.stat(follow_symlinks=False).st_mtime, UTC)
            if when >= cutoff:
                continue
            _remove_folder(base_fd, name)
            removed += 1
    finally:
        os.close(base_fd)
    return removed


def _remove_folder(base_fd: int, name: str) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=base_fd)  # fmt: skip
    except OSError:
        return
    try:
        for entry in os.scandir(fd):
            with contextlib.suppress(OSError):
                os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=base_fd)


def open_kept(task: HostTask, stream: str = "stdout"):
    """The kept output file of a task's stream, open for reading (binary); FileNotFoundError
    when the job did not keep output or nothing came."""
    if stream not in STREAMS:
        raise FileNotFoundError(stream)
    dir_fd = _open_job_dir(task.job_id, create=False)
    try:
        name = f"{task.task_id}.{stream}"
        fd = _ours(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd),
                   name, False)  # fmt: skip
    finally:
        os.close(dir_fd)
    return os.fdopen(fd, "rb")


def kept_complete(task: HostTask) -> bool:
    """Every byte the task's result counted is in its kept files (up to the job's cap)."""
    keep = kept_cap(task)
    for stream in STREAMS:
        want = min(getattr(task, f"{stream}_bytes") or 0, keep)
        try:
            with open_kept(task, stream) as f:
                have = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            have = 0
        if have < want:
            return False
    return True


def record_read(actor, job, tasks: list[HostTask], streams) -> None:
    """The audit trail's entry for kept output sent to ``actor`` (as record_download is for
    fetched files): a host's whole output may hold what its result's head and tail do not."""
    record(actor, AuditActionChoices.DOWNLOAD, kind=JobKindChoices.COMMAND, job=job,
           targets_resolved=[t.ip for t in tasks],
           detail={"output": list(streams), "tasks": [t.task_id for t in tasks]})  # fmt: skip


def write_full(stdout, found, user=None, actor=None) -> int:
    """`check_task ID --full`: each host's kept output. One host task: its bytes as they are
    (stdout to stdout, stderr to stderr), so `> file` gives the host's output exactly; more:
    each after a line naming the host and stream."""
    if not visible.reads_output(user):
        stdout.write(E_NO_OUTPUT.format(user=user.get_username()))
        return EXIT_NONE
    tasks = sorted(found.tasks, key=lambda t: ip_order(t.ip))
    if not tasks or not kept_cap(tasks[0]):
        job = found.job.pk if found.job is not None else (tasks[0].job_id if tasks else "?")
        stdout.write(E_NOT_KEPT.format(job=job))
        return EXIT_NONE
    record_read(actor, tasks[0].job, tasks, STREAMS)
    out = _binary(stdout)
    single = len(tasks) == 1
    unfinished = refused = False
    for task in tasks:
        give_up = time.monotonic() + SETTLE
        try:
            while task.is_terminal and not kept_complete(task) and time.monotonic() < give_up:
                time.sleep(0.1)
        except PermissionError:
            pass  # said below, per stream
        unfinished |= not task.is_terminal
        for stream in STREAMS:
            dest = out if stream == "stdout" or not single else _binary(sys.stderr)
            try:
                f = open_kept(task, stream)
            except FileNotFoundError:
                continue
            except PermissionError as exc:  # not ours alone (_ours): not shown, and said
                sys.stderr.write(f"{task.ip} {stream}: {exc}\n")
                refused = True
                continue
            with f:
                if not single:
                    dest.write(f"--- {task.ip} {stream} ({task.state}) ---\n".encode())
                copy(f, dest)
            dest.flush()
    if refused:
        return EXIT_NONE
    return EXIT_UNFINISHED if unfinished else EXIT_OK


def copy(f, dest) -> None:
    """``f`` into ``dest``: as it is when redirected (`> file` is the host's output exactly), its
    control characters shown escaped on a terminal, which a host's output must not drive."""
    if not _is_terminal(dest):
        while chunk := f.read(1 << 20):
            dest.write(chunk)
        return
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while chunk := f.read(1 << 20):
        dest.write(printable(decoder.decode(chunk)).encode())
    dest.write(printable(decoder.decode(b"", final=True)).encode())


def _is_terminal(dest) -> bool:
    try:
        return os.isatty(dest.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _binary(stream):
    out = getattr(stream, "_out", stream)
    with contextlib.suppress(AttributeError, ValueError):
        out.flush()
    return getattr(out, "buffer", None) or _Encoded(out)


class _Encoded:
    """A text stream (a test's StringIO) taking bytes."""

    def __init__(self, out):
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.write(data.decode("utf-8", "replace"))

    def flush(self) -> None:
        self.out.flush()
