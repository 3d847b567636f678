"""Taking in what agents report: notices and results in batches, facts, fetched files.

Everything is written in batches: the central worker takes results off the broker hundreds at a
time (cmdb.jobs.intake), and one batch is a handful of queries in one transaction. The states
change through cmdb.jobs.lifecycle, the rows are written by cmdb.jobs.records.
"""

import dataclasses
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, transaction

from cmdb.assets.store import store_report
from cmdb.celery import app as cmdb_app
from cmdb.files.fetched import store_fetched
from cmdb.hosts.models import Host
from cmdb.jobs import lifecycle, live, records, trust
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from wire import blobs, names
from wire.messages import MAX_CAPTURE_BYTES, Report, Started, VersionMismatch, WireError

logger = logging.getLogger(__name__)

#: The central worker's task that stores a fetched file (cmdb.jobs.tasks.store_fetched).
STORE_FETCHED = "cmdb.jobs.store_fetched"
E_FORGED_FETCH = "refused: the file was not sent where this host task asked for it"
E_NOT_STORED = "not stored on the server: {exc}"
E_FETCH_TOO_LARGE = ("refused: the host sent {size} bytes, more than CMDB_MAX_FETCH_BYTES "
                     "({limit})")  # fmt: skip
E_VERSION = "the agent's report could not be read: {exc}; upgrade the agent or the server"
E_TOO_LARGE = "the host's {name} was larger than the server keeps; not stored"

#: The most the server keeps of a report's texts and documents (a stream's head and tail:
#: wire.messages.MAX_CAPTURE_BYTES each, as agents capture).
MAX_TEXT = 64 << 10
MAX_NAME = 255
MAX_DOCUMENT = 4 << 20
TRANSFERS = frozenset({JobKindChoices.PUSH, JobKindChoices.FETCH})


#: Where a report the server cannot read may end its task from: not a cancelled one (the
#: operator's word), not one already ended (by what the host said, or by the server's verdict).
UNREADABLE_FROM = frozenset({State.PENDING, State.RUNNING})


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """At most ``limit`` bytes of ``text`` (UTF-8), and whether anything was cut."""
    if len(text) * 4 <= limit:  # no character is more than 4 bytes: nothing to measure
        return text, False
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


def _small(doc, limit: int = MAX_DOCUMENT) -> bool:
    return doc is None or len(json.dumps(doc)) <= limit


def bounded(report: Report, kind: str) -> Report:
    """What the server stores of a report: only the parts its job's kind has (facts only from
    a collection, a transfer only from a push or fetch, a file only from a fetch), each cut to
    what the server keeps of it. An agent captures no more than this; whatever sends more is
    not let fill the database."""
    streams = {}
    for name in ("stdout", "stderr"):
        stream = getattr(report, name)
        (head, cut_head), (tail, cut_tail) = (_cut(stream.head, MAX_CAPTURE_BYTES),
                                              _cut(stream.tail, MAX_CAPTURE_BYTES))  # fmt: skip
        if cut_head or cut_tail:
            stream = dataclasses.replace(stream, head=head, tail=tail, truncated=True)
        streams[name] = stream
    fields = {
        "error": _cut(report.error, MAX_TEXT)[0],
        "traceback": _cut(report.traceback, MAX_TEXT)[0] if report.traceback else None,
        "agent": _cut(report.agent, MAX_NAME)[0],
        "facts_report": report.facts_report if kind == JobKindChoices.COLLECT else None,
        "transfer": report.transfer if kind in TRANSFERS else None,
        "fetch_manifest": report.fetch_manifest if kind == JobKindChoices.FETCH else None,
    }
    for name in ("facts_report", "transfer", "fetch_manifest"):
        if not _small(fields[name]):
            logger.warning("%s of %s dropped: larger than %d bytes", name, report.task_id,
                           MAX_DOCUMENT)  # fmt: skip
            fields[name] = None
            fields["error"] = fields["error"] or E_TOO_LARGE.format(name=name)
    return dataclasses.replace(report, **streams, **fields)


def _believed(items, message, tasks: dict, kinds: dict, dropped: trust.Dropped,
              mismatched: dict) -> list:  # fmt: skip
    """The items (as they arrived) the accepted key of their task's host signed, read as
    ``message``; the rest is dropped and counted (cmdb.jobs.trust). A signed report in another
    version of the contract goes to ``mismatched`` (task id -> why): the host did its part,
    and the operator must hear why the server cannot say how it went."""
    believed = []
    for item in items:
        task_id = item.get("task_id") if isinstance(item, dict) else None
        task = tasks.get(task_id) if isinstance(task_id, str) else None
        agent = item.get("agent") if isinstance(item, dict) else None
        if task is None:
            # A job deleted meanwhile, or a forged id: nothing to attach it to.
            why = trust.R_MALFORMED if not isinstance(item, dict) else trust.R_UNKNOWN_TASK
            dropped.add(message.WHAT, why, task_id, agent)
            continue
        pem, key_state, candidate = trust.speaker(task)
        why = trust.from_host(message, item, task.ip, pem, key_state, candidate=candidate)
        if why:
            dropped.add(message.WHAT, why, task_id, agent)
            continue
        try:
            read = message.from_wire(item)
        except WireError as exc:
            logger.error("%s for %s dropped: %s", message.WHAT, task_id, exc)
            if message is Report and isinstance(exc, VersionMismatch) and not item.get("duplicate"):
                mismatched[task_id] = E_VERSION.format(exc=exc)
            continue
        believed.append(bounded(read, kinds[task.job_id]) if message is Report else read)
    return believed


def store_batch(started: Iterable[dict], finished: Iterable[dict]) -> int:
    """Apply "started" notices, then results, in one transaction; return host tasks changed."""
    started, finished = list(started), list(finished)
    ids = {i for item in [*started, *finished]
           if isinstance(item, dict) and isinstance(i := item.get("task_id"), str)}  # fmt: skip
    mismatched: dict[str, str] = {}
    dropped = trust.Dropped()
    with transaction.atomic():
        # select_for_update: on PostgreSQL two central workers must not interleave on a task
        # (SQLite takes the write lock at BEGIN IMMEDIATE anyway). Only the tasks' own rows.
        rows = (HostTask.objects.select_related("host").select_for_update(of=("self",))
                .filter(task_id__in=list(ids)))  # fmt: skip
        tasks = {t.task_id: t for t in rows}
        # The jobs' kinds once, not a Job object per host task (a batch is mostly one job).
        kinds = dict(Job.objects.filter(pk__in={t.job_id for t in tasks.values()})
                     .values_list("pk", "kind"))  # fmt: skip
        changed: dict[str, tuple[HostTask, dict]] = {}
        for verb, message, items in ((lifecycle.begin, Started, started),
                                     (lifecycle.report, Report, finished)):  # fmt: skip
            for item in _believed(items, message, tasks, kinds, dropped, mismatched):
                task = tasks[item.task_id]
                try:
                    moved = verb(task, item)
                except (ValueError, OverflowError, OSError):
                    # A time no clock can show (1e20): one bad report must not hold up the
                    # batch it arrived in (the verbs compute every field before they move).
                    logger.exception("malformed report for %s dropped", task.task_id)
                    continue
                if moved:
                    payload = item.to_wire() if isinstance(item, Report) else {}
                    payload.pop("signature", None)
                    changed[task.task_id] = (task, payload)
        records.write(changed, kinds)
        _store_facts([(task, p) for task, p in changed.values() if p.get("facts_report")])
    dropped.flush(cmdb_app)
    if mismatched:
        # Unreadable, yet from an agent: the operator must hear why, not wait for "lost".
        pks = HostTask.objects.filter(task_id__in=mismatched).values_list("pk", flat=True)
        lifecycle.conclude(pks, State.ERROR, lambda t: mismatched[t.task_id],
                           only_from=UNREADABLE_FROM)  # fmt: skip
    # After the commit: followers (cmdb.jobs.live) read the rows as written here.
    live.publish_stored([t for t, _ in changed.values()])
    # After the commit: the storing task must find the row as written here.
    _hand_over_fetched([(t, p) for t, p in changed.values() if t.state == State.STORING])
    return len(changed)


def _hand_over_fetched(fetched: list[tuple[HostTask, dict]]) -> None:
    """Queue each received file for storing by the central worker's pool."""
    for task, payload in fetched:
        try:
            cmdb_app.send_task(STORE_FETCHED, args=[task.task_id, payload])
        except Exception:  # the broker this payload just came from is gone: store it here
            logger.exception("could not queue the storing of %s; storing it now", task.task_id)
            finish_fetch(task.task_id, payload)


def finish_fetch(task_id: str, payload: dict) -> None:
    """Assemble the file a host sent for a fetch job into the job's folder (one folder per
    host), verified, and end its host task: ok with its ``fetched`` record, or error."""
    task = HostTask.objects.select_related("job").filter(task_id=task_id).first()
    manifest = payload.get("fetch_manifest") or {}
    # Storing as store_batch left it, or ended "lost" meanwhile by the monitor (the file did
    # arrive); not cancelled, not stored already.
    if task is None or task.fetched or task.state not in lifecycle.STORED_FROM:
        logger.warning("fetched file for %s not stored: the host task is %s", task_id,
                       task.state if task else "gone")  # fmt: skip
        if task and task.state == State.CANCELLED and _own_blob(task, manifest):
            _delete_blob(manifest)  # nobody will collect it: Redis is not a file store
        return
    fetched, error, limit = None, None, settings.CMDB["MAX_FETCH_BYTES"]
    if not _own_blob(task, manifest):
        # Only the blob this host was asked to send: a forged manifest naming a push's blob
        # must not be copied (and then deleted) by the server.
        logger.warning("fetch manifest from %s refused (namespace %r)", task.ip,
                       manifest.get("namespace"))  # fmt: skip
        error = E_FORGED_FETCH
    elif (
        not isinstance(size := manifest.get("size"), int) or size > settings.CMDB["MAX_FETCH_BYTES"]
    ):
        # The host was told the limit; an agent that sends more anyway is not stored, and its
        # blob leaves the broker now rather than in six hours.
        error = E_FETCH_TOO_LARGE.format(size=size, limit=limit)
        _delete_blob(manifest)
    else:
        job = task.job
        # The CLI names a folder; the API and the admin leave it to FETCH_DIR/<job id>.
        to = job.params.get("to") or str(settings.CMDB["FETCH_DIR"] / str(job.pk))
        try:
            local = store_fetched(cmdb_app, to, task.ip, job.params["agent"]["path"], manifest)
        except Exception as exc:  # the host task must say why, whatever it was
            logger.exception("fetched file from %s not stored", task.ip)
            error = E_NOT_STORED.format(exc=exc)
        else:
            fetched = {"path": local, "sha256": manifest.get("sha256", ""),
                       "size": manifest.get("size")}  # fmt: skip
    with transaction.atomic():
        task = HostTask.objects.select_for_update().get(pk=task.pk)
        if task.fetched:
            return  # a second delivery of this result, after the first had stored it
        moved = lifecycle.stored(task, fetched) if fetched else lifecycle.not_stored(task, error)
        if not moved and fetched:
            # Cancelled while it was being stored: the operator's word stands, the copy goes.
            Path(fetched["path"]).unlink(missing_ok=True)
        if moved:
            records.write({task.task_id: (task, payload)})


def _own_blob(task: HostTask, manifest: dict) -> bool:
    """The manifest names the blob this host was asked to send for this fetch job."""
    namespace = names.fetch_namespace(task.job_id, task.ip)
    return task.job.kind == JobKindChoices.FETCH and manifest.get("namespace") == namespace


def _delete_blob(manifest: dict) -> None:
    try:
        with redis_client(cmdb_app) as client:
            blobs.delete_blob(client, manifest)
    except Exception:  # it expires by itself in the end
        logger.warning("could not delete the blob of a cancelled fetch", exc_info=True)


def _store_facts(collected: list[tuple[HostTask, dict]]) -> None:
    """Asset rows and history for collect jobs' results (in the batch's transaction)."""
    if not collected:
        return
    hosts = Host.objects.in_bulk([task.host_id for task, _ in collected if task.host_id])
    for task, payload in collected:
        host = hosts.get(task.host_id)
        if host is None:
            continue  # removed from the inventory meanwhile
        try:
            with transaction.atomic():  # a savepoint: one bad report spoils only itself
                store_report(host, payload["facts_report"], job_id=task.job_id)
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError, DatabaseError):
            # The savepoint undid this report only; the host task still gets its result.
            logger.exception("facts from %s could not be stored", task.ip)


def store_result(payload: dict) -> int:
    """Store one agent result (the link callback of workers.run_command)."""
    return store_batch([], [payload])


def mark_started(info: dict) -> int:
    """Record that an agent began a host task."""
    return store_batch([info], [])
