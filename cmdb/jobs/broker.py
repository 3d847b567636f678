"""The server's direct uses of the broker's Redis (beyond publishing tasks), and its errors."""

import contextlib
import json

import redis
from kombu.exceptions import KombuError

from wire import names

#: What a broker that is down or gone raises, through kombu or its Redis client.
BROKER_ERRORS = (KombuError, OSError, redis.RedisError)

#: Seconds the cancel mark is kept: longer than any message may wait in a queue.
CANCEL_MARK_TTL = 7 * 24 * 3600


@contextlib.contextmanager
def redis_client(app):
    """kombu's own Redis client for the broker URL, so that Sentinel and TLS URLs work as they
    do for Celery; open for the ``with`` block."""
    with app.connection_for_write() as conn:
        yield conn.default_channel.client


def mark_cancelled(app, task_ids: list[str], ttl: int = CANCEL_MARK_TTL) -> None:
    """Set the mark agents check before and while running a task: it will not run (on)."""
    if not task_ids:
        return
    with redis_client(app) as client, client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.set(names.CANCELLED_KEY.format(task_id=task_id), 1, ex=ttl)
        pipe.execute()


def fence(app, tasks: list[tuple[str, str]], ttl: int = CANCEL_MARK_TTL) -> dict[str, str | None]:
    """Take the run-once claim of each (task id, host) for the server; task id -> None where the
    server holds it (now, or since an earlier try whose verdict was not written: no agent will
    ever start that task, workers.guard refuses a claim taken), else the claim's holder (the
    pid of the agent that took the task first, as that host's agent wrote it)."""
    if not tasks:
        return {}
    with redis_client(app) as client, client.pipeline(transaction=False) as pipe:
        for task_id, host in tasks:
            key = names.CLAIMED_KEY.format(host=host, task_id=task_id)
            pipe.set(key, names.CLAIMED_BY_SERVER, nx=True, ex=ttl)
            pipe.get(key)
        replies = pipe.execute()
    out = {}
    for (task_id, _), got, holder in zip(tasks, replies[::2], replies[1::2], strict=True):
        held = got or _text(holder) == names.CLAIMED_BY_SERVER
        out[task_id] = None if held else _text(holder)
    return out


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


#: A host queue longer than this is not searched for messages to take out: the fence already
#: makes them harmless (their agent refuses them), and the sweep must stay quick.
UNQUEUE_SCAN_LIMIT = 10_000


#: Messages read from a host's queue per round trip while looking for those to take out.
UNQUEUE_CHUNK = 200
#: A message larger than this is not parsed (the server's own are a few KiB; a host's agent may
#: push anything onto its own queue).
UNQUEUE_MAX_MESSAGE = 256 << 10


def _task_id_of(raw: bytes) -> str | None:
    if len(raw) > UNQUEUE_MAX_MESSAGE:
        return None
    try:
        task_id = json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None
    return task_id if isinstance(task_id, str) else None


def unqueue(client, host: str, task_ids: set[str]) -> set[str]:
    """Take the messages of ``task_ids`` out of ``host``'s queue (``client``: the broker's
    Redis); returns the ids it removed. The rest were already taken by an agent, or the queue
    was too long to search; the fence makes them harmless either way."""
    removed: set[str] = set()
    length = client.llen(host)
    if length > UNQUEUE_SCAN_LIMIT:
        return removed
    found = []
    for start in range(0, length, UNQUEUE_CHUNK):
        for raw in client.lrange(host, start, start + UNQUEUE_CHUNK - 1):
            task_id = _task_id_of(raw)
            if task_id in task_ids:
                found.append((task_id, raw))
    if not found:
        return removed
    # LREM of each exact message: 1 only if it was still there (no agent took it meanwhile).
    with client.pipeline(transaction=False) as pipe:
        for _, raw in found:
            pipe.lrem(host, 1, raw)
        counts = pipe.execute()
    return {task_id for (task_id, _), n in zip(found, counts, strict=True) if n}


#: Redis key marking a task whose message the server sent once more (at most once).
RESENT_KEY = "cmdb:resent:{task_id}"
#: Releases the server's own claim only (an agent's, taken meanwhile, stays).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def held_by_agent(client, host: str, task_ids: set[str]) -> set[str]:
    """Which of ``task_ids`` sit in the unacknowledged messages of ``host``'s agent (kombu's
    hash under the agent's own keys): handed over, not yet started."""
    key = names.UNACKED_KEYS["unacked_key"].format(host=names.hosts_tag([host]))
    found = set()
    for raw in client.hvals(key):
        try:
            message = json.loads(raw)[0]
            task_id = message["headers"]["id"]
        except (ValueError, KeyError, TypeError, IndexError):
            continue
        if isinstance(task_id, str) and task_id in task_ids:
            found.add(task_id)
    return found


def release_for_resend(client, task_id: str, host: str, ttl: int = CANCEL_MARK_TTL) -> bool:
    """Mark ``task_id`` resent (once only) and give up the server's claim on it; False if it
    was resent before (then the claim stays, and the task ends unreachable)."""
    if not client.set(RESENT_KEY.format(task_id=task_id), 1, nx=True, ex=ttl):
        return False
    key = names.CLAIMED_KEY.format(host=host, task_id=task_id)
    client.eval(RELEASE, 1, key, names.CLAIMED_BY_SERVER)
    return True
