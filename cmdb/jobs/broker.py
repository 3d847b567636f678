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
    server got it (no agent will ever start that task: workers.guard refuses a claim taken),
    else the claim's holder (the pid of the agent that took the task first)."""
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
        out[task_id] = None if got else _text(holder)
    return out


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


#: A host queue longer than this is not searched for messages to take out: the fence already
#: makes them harmless (their agent refuses them), and the sweep must stay quick.
UNQUEUE_SCAN_LIMIT = 10_000


def unqueue(app, host: str, task_ids: set[str]) -> set[str]:
    """Take the messages of ``task_ids`` out of ``host``'s queue; returns the ids it removed (the
    rest were already taken by an agent, or the queue was too long to search)."""
    removed = set()
    with redis_client(app) as client:
        if client.llen(host) > UNQUEUE_SCAN_LIMIT:
            return removed
        for raw in client.lrange(host, 0, -1):
            try:
                task_id = json.loads(raw)["headers"]["id"]
            except (ValueError, KeyError, TypeError):
                continue
            # LREM of this exact message: 1 only if it was still there (no agent took it).
            if task_id in task_ids and client.lrem(host, 1, raw):
                removed.add(task_id)
    return removed
