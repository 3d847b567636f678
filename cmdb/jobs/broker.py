"""The server's direct uses of the broker's Redis (beyond publishing tasks), and its errors."""

import contextlib

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
