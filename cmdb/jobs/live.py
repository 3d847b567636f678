"""Live output and pushed results: a job's events, in a Redis stream per job.

The intake (cmdb.jobs.intake) hands over the output chunks agents send (wire.messages.Output)
in the order they arrived, before the results of the same batch: only chunks the accepted key
of their task's host signed are believed (cmdb.jobs.trust), the rest are dropped and counted.
A believed chunk is added to the job's stream, and written into the task's kept output file
when the job keeps output (--keep-output). Each host task stored is an event too, after the
commit: a follower reads the task then, and finds it as written.

A stream, not pub/sub: a reader that comes late (or reconnects with a cursor) reads what it
missed, so `run --wait` misses nothing between dispatch and its first read.
"""

import base64
import binascii
import contextlib
import json
import logging

from cmdb.celery import app as cmdb_app
from cmdb.jobs import kept, trust
from cmdb.jobs.broker import BROKER_ERRORS, redis_client
from cmdb.jobs.models import HostTask
from wire import names
from wire.messages import Output, WireError

logger = logging.getLogger(__name__)

#: Events a job's stream keeps (about; the oldest go first) and for how long.
STREAM_MAXLEN = 20000
STREAM_TTL = 24 * 3600
STREAMS = ("stdout", "stderr")
#: The most of each stream one event carries (as much as an agent sends live per flush).
SHOW_BYTES = 64 << 10


def events_key(job_id) -> str:
    return names.EVENTS_KEY.format(job=job_id)


def relay(items: list[dict]) -> int:
    """Believe, keep and publish a batch of output chunks; return how many were believed."""
    ids = {
        i for item in items if isinstance(item, dict) and isinstance(i := item.get("task_id"), str)
    }
    if not ids:
        return 0
    tasks = {t.task_id: t for t in HostTask.objects.select_related("host", "job")
             .filter(task_id__in=list(ids))}  # fmt: skip
    dropped, events = trust.Dropped(), []
    for item in items:
        task = tasks.get(item.get("task_id")) if isinstance(item, dict) else None
        if task is None:
            what = item.get("task_id") if isinstance(item, dict) else ""
            dropped.add(Output.WHAT, trust.R_UNKNOWN_TASK, what)
            continue
        host = task.host
        why = trust.from_host(Output, item, task.ip, host.agent_key if host else "",
                              host.key_state if host else "",
                              candidate=bool(host and host.candidate_key))  # fmt: skip
        if why:
            dropped.add(Output.WHAT, why, task.task_id, item.get("agent"))
            continue
        try:
            chunk = Output.from_wire(item)
            data = {s: base64.b64decode(getattr(chunk, s), validate=True) for s in STREAMS}
        except (WireError, binascii.Error) as exc:
            logger.error("output chunk for %s dropped: %s", task.task_id, exc)
            continue
        keep = int((task.job.params or {}).get("keep_output") or 0)
        for stream in STREAMS:
            at = getattr(chunk, f"{stream}_at")
            if data[stream] and keep and at < keep:
                kept.keep(task, stream, at, data[stream][: keep - at])
        shown = {}
        for stream in STREAMS:
            # A kept output's chunks are large (workers.live.KEEP_CHUNK_BYTES): followers get
            # the end of each, as they would from an agent not keeping it.
            at, part = getattr(chunk, f"{stream}_at"), data[stream]
            if len(part) > SHOW_BYTES:
                at, part = at + len(part) - SHOW_BYTES, part[-SHOW_BYTES:]
            shown[stream] = (at, part)
        events.append((task.job_id, {
            "type": "output", "task": task.task_id, "host": task.ip, "seq": chunk.seq,
            "elapsed": chunk.elapsed,
            **{f"{s}_at": shown[s][0] for s in STREAMS},
            **{s: shown[s][1].decode("utf-8", "replace") for s in STREAMS},
        }))  # fmt: skip
    dropped.flush(cmdb_app)
    publish(events)
    return len(events)


def publish_stored(tasks) -> None:
    """One "stored" event per host task whose state changed (after the commit)."""
    publish([(t.job_id, {"type": "task", "task": t.task_id, "host": t.ip, "state": t.state})
             for t in tasks])  # fmt: skip


def publish(events: list[tuple[object, dict]]) -> None:
    if not events:
        return
    try:
        with redis_client(cmdb_app) as client, client.pipeline(transaction=False) as pipe:
            for job_id, event in events:
                key = events_key(job_id)
                pipe.xadd(key, {"e": json.dumps(event)}, maxlen=STREAM_MAXLEN, approximate=True)
                pipe.expire(key, STREAM_TTL)
            pipe.execute()
    except BROKER_ERRORS:
        # Followers also read the stored state when they hear nothing: they catch up.
        logger.warning("could not publish %d job events", len(events), exc_info=True)


@contextlib.contextmanager
def reader():
    """A connection to read job streams with (``read``), open for the ``with`` block."""
    with redis_client(cmdb_app) as client:
        yield client


def read(client, job_id, after: str = "0-0", block_ms: int | None = None, count: int = 1000):
    """[(cursor, event)] after ``after`` in the job's stream; waits up to ``block_ms`` for one."""
    got = client.xread({events_key(job_id): after}, count=count, block=block_ms)
    out = []
    for _key, entries in got or []:
        for cursor, fields in entries:
            raw = fields.get(b"e") or fields.get("e")
            with contextlib.suppress(ValueError, TypeError):
                cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
                out.append((cursor, json.loads(raw)))
    return out
