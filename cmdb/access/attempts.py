"""Failed logins counted in the broker's Redis, so that every gunicorn worker (and every server
behind one broker) shares the count: a limit per process would be one per worker.

Two counts, each a fixed window: per client address (REMOTE_ADDR, never X-Forwarded-For,
which the client writes) and per username tried (casefolded, so "Alice" and "alice" share
one), which no number of addresses gets around. Only failures count: a user who logs in is
not slowed by their own successes. When Redis cannot be reached the login is refused (fail
closed): an uncounted login would be an unlimited one.

An attempt is counted before its password is checked (``begin``, one Lua script: atomic), and
given back when it succeeds (``succeeded``): checking a password takes a hash's time, and a
count read first and written after would let every attempt sent in parallel through, however
many (the limit is on attempts in flight too, not only on those that ended).
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

E_TOO_MANY = "too many failed logins from this address or for this username: try again in {wait} s"
E_UNCOUNTED = "login attempts cannot be counted now (the broker is down): try again later"

#: KEYS: the counts; ARGV: the window, then each count's limit. Counts one attempt on each
#: (the window starts at its first: SET NX EX, any Redis); if that takes one past its limit,
#: the attempt is not made and not counted: the seconds until the window ends are returned.
_BEGIN = """
local wait = 0
for i, key in ipairs(KEYS) do
  redis.call('SET', key, 0, 'EX', ARGV[1], 'NX')
  if redis.call('INCR', key) > tonumber(ARGV[i + 1]) then
    local ttl = redis.call('TTL', key)
    if ttl < 1 then ttl = 1 end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then
  for _, key in ipairs(KEYS) do redis.call('DECR', key) end
end
return wait
"""
#: Gives an attempt back, never below 0 nor into a window that already ended (a DECR of a
#: key gone would make one of -1 without expiry: an attempt more, for ever).
_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
"""


class Unavailable(Exception):
    """The counts cannot be read or written (Redis down)."""


def _keys(address: str, username: str) -> list[str]:
    # The username hashed: a key name is no place for what a client typed.
    name = hashlib.sha256(username.casefold().encode()).hexdigest()[:32]
    return [f"{PREFIX}addr:{address}", f"{PREFIX}user:{name}"]


def _run(script: str, keys: list[str], *args) -> int:
    try:
        with redis_client(cmdb_app) as client:
            return int(client.eval(script, len(keys), *keys, *args))
    except BROKER_ERRORS as exc:
        raise Unavailable(str(exc)) from None


def begin(address: str, username: str) -> int:
    """Count an attempt for this address and username, as a failure until ``succeeded`` says
    otherwise; or, past a limit, seconds until another is allowed (not counted then)."""
    return _run(_BEGIN, _keys(address, username), WINDOW, PER_ADDRESS, PER_USERNAME)


def succeeded(address: str, username: str) -> None:
    """The attempt ``begin`` counted was not a failure: give it back."""
    _run(_GIVE_BACK, _keys(address, username))
