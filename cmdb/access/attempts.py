"""Failed logins counted in the broker's Redis, so that every gunicorn worker (and every server
behind one broker) shares the count: a limit per process would be one per worker.

Two counts, each a fixed window: per client address (REMOTE_ADDR, never X-Forwarded-For,
which the client writes) and per username tried (casefolded, so "Alice" and "alice" share
one), which no number of addresses gets around. Only failures count: a user who logs in is
not slowed by their own successes. When Redis cannot be reached the login is refused (fail
closed): an uncounted login would be an unlimited one.
"""

import hashlib

from cmdb.celery import app as cmdb_app
from cmdb.jobs.broker import BROKER_ERRORS, redis_client

#: Failed attempts allowed in one window, per client address and per username.
PER_ADDRESS = 10
PER_USERNAME = 10
#: Seconds of a window.
WINDOW = 60
PREFIX = "cmdb:login-failed:"


class Unavailable(Exception):
    """The counts cannot be read or written (Redis down)."""


def _keys(address: str, username: str) -> list[str]:
    # The username hashed: a key name is no place for what a client typed.
    name = hashlib.sha256(username.casefold().encode()).hexdigest()[:32]
    return [f"{PREFIX}addr:{address}", f"{PREFIX}user:{name}"]


def blocked(address: str, username: str) -> int:
    """Seconds until another attempt is allowed for this address and username (0: now)."""
    keys = _keys(address, username)
    try:
        with redis_client(cmdb_app) as client, client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.ttl(key)
            got = pipe.execute()
    except BROKER_ERRORS as exc:
        raise Unavailable(str(exc)) from None
    waits = []
    for (count, ttl), limit in zip(zip(got[::2], got[1::2], strict=True),
                                   (PER_ADDRESS, PER_USERNAME), strict=True):  # fmt: skip
        if count is not None and int(count) >= limit:
            waits.append(max(ttl, 1))  # a key without its expiry yet: one second
    return max(waits, default=0)


def failed(address: str, username: str) -> None:
    """Count one failed attempt for this address and username."""
    try:
        with redis_client(cmdb_app) as client, client.pipeline(transaction=False) as pipe:
            for key in _keys(address, username):
                # The window starts at its first failure (SET NX: any Redis, not only 7's
                # EXPIRE NX).
                pipe.set(key, 0, ex=WINDOW, nx=True)
                pipe.incr(key)
            pipe.execute()
    except BROKER_ERRORS as exc:
        raise Unavailable(str(exc)) from None
