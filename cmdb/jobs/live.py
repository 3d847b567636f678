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
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from cmdb.celery import app as cmdb_app
from cmdb.jobs import kept, trust
from cmdb.jobs.broker import BROKER_ERRORS, redis_client
from cmdb.jobs.models import HostTask
from wire import names
from wire.messages import Output, WireError

logger = logging.getLogger(__name__)

#: Events a job's stream keeps (about; the oldest go first) and for how long. The broker is
#: the fleet's Redis: `cat /dev/urandom` on a thousand hosts must not fill it, so a job's
#: output events also stop at CMDB["EVENTS_JOB_BYTES"] (one "truncated" event says so); its
#: task events always go.
STREAM_MAXLEN = 2000
STREAM_TTL = 24 * 3600
STREAMS = ("stdout", "stderr")
#: The most of each stream one event shows (the end of what the chunk carried): followers see
#: a line's worth of a fast command each flush, not all of it.
SHOW_BYTES = 4 << 10
#: A chunk of a task stored in an end state longer ago than this is not believed: the last
#: ones may come a little after the result (their queue is the same, their batch not).
LATE = timedelta(seconds=30)
R_LATE = "its task ended before"


def events_key(job_id) -> str:
    return names.EVENTS_KEY.format(job=job_id)


def budget_key(job_id) -> str:
    """Bytes of output events the job's stream took (under cmdb:events:, as agents may not)."""
    return names.EVENTS_KEY.format(job=job_id) + ":bytes"


def seq_key(job_id) -> str:
    """Hash of task id: the seq of the last chunk believed of it."""
    return names.EVENTS_KEY.format(job=job_id) + ":seq"


def encode(event: dict) -> str:
    # ensure_ascii=False: a replacement character is 3 bytes, not the 6 of "\ufffd".
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def relay(items: list[dict]) -> int:
    """Believe, keep and publish a batch of output chunks; return how many were believed."""
    ids = {
        i for item in items if isinstance(item, dict) and isinstance(i := item.get("task_id"), str)
    }
    if not ids:
        return 0
    tasks = {t.task_id: t for t in HostTask.objects.select_related("host", "job")
             .filter(task_id__in=list(ids))}  # fmt: skip
    dropped, events, believed, now = trust.Dropped(), [], [], timezone.now()
    for item in items:
        task = tasks.get(item.get("task_id")) if isinstance(item, dict) else None
        if task is None:
            what = item.get("task_id") if isinstance(item, dict) else ""
            dropped.add(Output.WHAT, trust.R_UNKNOWN_TASK, what)
            continue
        pem, key_state, candidate = trust.speaker(task)
        why = trust.from_host(Output, item, task.ip, pem, key_state, candidate=candidate)
        if why:
            dropped.add(Output.WHAT, why, task.task_id, item.get("agent"))
            continue
        try:
            chunk = Output.from_wire(item)
            data = {s: base64.b64decode(getattr(chunk, s), validate=True) for s in STREAMS}
        except (WireError, binascii.Error) as exc:
            logger.error("output chunk for %s dropped: %s", task.task_id, exc)
            continue
        if task.is_terminal and task.finished_at and now - task.finished_at > LATE:
            dropped.add(Output.WHAT, R_LATE, task.task_id, item.get("agent"))
            continue
        believed.append((task, chunk, data))
    for task, chunk, data in newer(believed, dropped):
        keep = int((task.job.params or {}).get("keep_output") or 0)
        for stream in STREAMS:
            at = getattr(chunk, f"{stream}_at")
            if data[stream] and keep and at < keep:
                kept.keep(task, stream, at, data[stream][: keep - at])
        shown = {s: shown_of(getattr(chunk, f"{s}_at"), data[s]) for s in STREAMS}
        events.append((task.job_id, {
            "type": "output", "task": task.task_id, "host": task.ip, "seq": chunk.seq,
            "elapsed": chunk.elapsed,
            **{f"{s}_at": shown[s][0] for s in STREAMS},
            **{s: shown[s][1] for s in STREAMS},
        }))  # fmt: skip
    dropped.flush(cmdb_app)
    publish(events)
    return len(events)


def newer(believed: list, dropped: trust.Dropped) -> list:
    """The chunks whose seq is beyond the last one believed of their task (kept in Redis, per
    job): a signed chunk sent again (replayed) is not shown or written twice."""
    if not believed:
        return []
    try:
        with redis_client(cmdb_app) as client:
            with client.pipeline(transaction=False) as pipe:
                for task, _, _ in believed:
                    pipe.hget(seq_key(task.job_id), task.task_id)
                last = {t.task_id: int(n or 0) for (t, _, _), n in zip(believed, pipe.execute(),
                                                                     strict=True)}  # fmt: skip
            out = []
            for task, chunk, data in believed:
                if chunk.seq <= last[task.task_id]:
                    dropped.add(Output.WHAT, trust.R_STALE, task.task_id, chunk.agent)
                    continue
                last[task.task_id] = chunk.seq
                out.append((task, chunk, data))
            with client.pipeline(transaction=False) as pipe:
                for task, chunk, _ in out:
                    pipe.hset(seq_key(task.job_id), task.task_id, chunk.seq)
                    pipe.expire(seq_key(task.job_id), STREAM_TTL)
                pipe.execute()
            return out
    except BROKER_ERRORS:
        logger.warning("could not check %d output chunks' seq", len(believed), exc_info=True)
        return believed


def shown_of(at: int, part: bytes) -> tuple[int, str]:
    """(offset, text) of the end of a chunk's stream that followers are shown: SHOW_BYTES at
    most, so a chunk of 64 KiB (or a kept output's 512 KiB) costs the broker a few KiB."""
    if len(part) > SHOW_BYTES:
        at, part = at + len(part) - SHOW_BYTES, part[-SHOW_BYTES:]
    return at, part.decode("utf-8", "replace")


def publish_stored(tasks) -> None:
    """One "stored" event per host task whose state changed (after the commit), with its exit
    code and duration: a follower can say how a host ended without reading it again."""
    publish([(t.job_id, {"type": "task", "task": t.task_id, "host": t.ip, "state": t.state,
                         "exit_code": t.exit_code, "duration": t.duration})
             for t in tasks])  # fmt: skip


def publish(events: list[tuple[object, dict]]) -> None:
    if not events:
        return
    try:
        with redis_client(cmdb_app) as client:
            encoded = within_budget(client, [(j, e, encode(e)) for j, e in events])
            with client.pipeline(transaction=False) as pipe:
                for job_id, raw in encoded:
                    key = events_key(job_id)
                    pipe.xadd(key, {"e": raw}, maxlen=STREAM_MAXLEN, approximate=True)
                    pipe.expire(key, STREAM_TTL)
                pipe.execute()
    except BROKER_ERRORS:
        # Followers also read the stored state when they hear nothing: they catch up.
        logger.warning("could not publish %d job events", len(events), exc_info=True)


def within_budget(client, events: list[tuple[object, dict, str]]) -> list[tuple[object, str]]:
    """``events`` (job, event, its json) less the output events past their job's byte budget,
    counted in Redis (INCRBY: every intake process shares it), plus one "truncated" event for
    the job, from the one batch that crossed the budget."""
    budget = int(settings.CMDB["EVENTS_JOB_BYTES"])
    sizes: dict[object, int] = {}
    for job_id, event, raw in events:
        if event.get("type") == "output":
            sizes[job_id] = sizes.get(job_id, 0) + len(raw.encode())
    if not sizes:
        return [(job_id, raw) for job_id, _, raw in events]
    with client.pipeline(transaction=False) as pipe:
        for job_id, size in sizes.items():
            pipe.incrby(budget_key(job_id), size)
            pipe.expire(budget_key(job_id), STREAM_TTL)
        totals = pipe.execute()[::2]
    start = {j: budget - (total - sizes[j]) for j, total in zip(sizes, totals, strict=True)}
    left, out, cut = dict(start), [], set()
    for job_id, event, raw in events:
        if event.get("type") == "output":
            size = len(raw.encode())
            if size > left[job_id]:
                if start[job_id] >= 0 and job_id not in cut:  # this batch crossed it
                    cut.add(job_id)
                    out.append((job_id, encode({"type": "truncated", "task": event.get("task"),
                                                "budget": budget})))  # fmt: skip
                left[job_id] = -1  # the rest of this batch too: what is shown has no holes
                continue
            left[job_id] -= size
        out.append((job_id, raw))
    return out


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


SLOTS_KEY = "cmdb:events-answers:{user}"
#: A user's answers, one member each (a sorted set, scored by when each expires by itself):
#: KEYS[1]; ARGV: now, the most at once, seconds a slot lasts, the new member. 1: taken.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def take_slot(user_id, most: int, ttl: int) -> str | None:
    """One of ``most`` concurrent event answers of a user: its token (for ``give_back``), or
    None when all are taken. Each slot expires by itself after ``ttl``: one a web worker
    killed mid-answer never gave back goes then, however many answers the user opens
    meanwhile (one count, renewed by each, never expired while a job page stayed open). A
    broker down takes nothing (the answer will fail by itself)."""
    key = SLOTS_KEY.format(user=user_id)
    member = uuid.uuid4().hex
    try:
        with redis_client(cmdb_app) as client:
            if not client.eval(_TAKE, 1, key, time.time(), most, ttl, member):
                return None
    except BROKER_ERRORS:
        logger.warning("could not count event answers of user %s", user_id, exc_info=True)
    return f"{key} {member}"


def give_back(slot: str) -> None:
    """The slot is free again; one that expired (or was never taken) gives nothing more."""
    key, _, member = slot.rpartition(" ")
    with contextlib.suppress(*BROKER_ERRORS), redis_client(cmdb_app) as client:
        client.zrem(key, member)
