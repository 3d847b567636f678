"""The central worker's intake: agents' "started" notices and results, stored in batches.

Agents send both as ordinary Celery task messages (the result is the link callback of
workers.run_command), which kombu's Redis transport LPUSHes onto the results queue's list. A
Celery task per message costs a round of Celery overhead and a transaction each: a few hundred
per second on SQLite. This intake takes up to FLUSH_EVERY messages at once and stores them in
one transaction (results.store_batch).

Why not kombu's consumer for it: its Redis transport BRPOPs a message and only then records it
as unacknowledged (HSET + ZADD, a second round trip). A central worker killed between the two
loses that result for good; one killed after leaves it unacknowledged until the visibility
timeout (1 h) restores it, long after its task was judged. The issue-14 fault run saw both.

What this does instead is Redis' reliable-queue pattern: LMOVE moves each message, atomically,
from the results list to a processing list of this central worker's own (named after its node);
only once the batch is committed is that list deleted (the acknowledgement). Whatever dies when,
a message is on one of the two lists or stored:
- a central worker that died on this machine is found dead (pid and start time) by the next
  intake here, which puts its list back at once;
- one that died elsewhere stops renewing its lease (LEASE seconds, renewed by a thread of its
  own), and any live intake puts its list back;
- the database failing, or refusing every write, puts the batch back (after a pause, not in a
  hot loop); a message that alone cannot be stored is kept aside (DEAD_KEY), never dropped.
A batch stored twice (killed between the commit and the delete, or a slow worker whose lease
ran out) changes nothing the second time: every state change is checked (cmdb.jobs.lifecycle).

Why not Redis Streams (XREADGROUP/XACK/XAUTOCLAIM), which do the same: agents would have to
publish differently, and their broker users be allowed XADD. A list keeps the wire format, every
agent already deployed and the agents' ACL (LPUSH only) as they are. Needs Redis >= 6.2 (LMOVE).
"""

import base64
import binascii
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import psutil
from celery import bootsteps
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from kombu import Exchange, Queue

from cmdb.jobs import live, results
from cmdb.jobs.broker import BROKER_ERRORS
from wire import names

logger = logging.getLogger(__name__)

FLUSH_EVERY = 500
#: The server's own keys (no agent may touch them: its broker user has no right on cmdb:intake).
PROCESSING_KEY = "cmdb:intake:{consumer}:processing"
LEASE_KEY = "cmdb:intake:{consumer}:lease"
#: Every intake that has taken from the results list (node name and process).
CONSUMERS_KEY = "cmdb:intake:consumers"
#: What could not be stored though the database took the rest: kept for a person to look at,
#: never dropped (newest first, the last DEAD_KEEP).
DEAD_KEY = "cmdb:intake:dead"
DEAD_KEEP = 10_000

#: Seconds a take waits for the first message of a batch.
WAIT = 1.0
#: Seconds an intake's claim on its processing list lasts without renewal; renewed by a thread
#: of its own every LEASE / 3, however long a batch takes to store.
LEASE = 15
#: Seconds between looks for the lists of intakes whose lease ran out.
RECLAIM_EVERY = 5.0
#: Seconds to wait after the database or the broker failed, before trying again.
BACKOFF = 1.0

#: Up to ARGV[1] more messages from the results list to the processing list, in one round trip.
TAKE_MORE = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not m then break end
  out[i] = m
end
return out
"""
#: Everything on a processing list back onto the results list, where it is taken next.
PUT_BACK = """
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do n = n + 1 end
return n
"""
#: Another intake's list put back and forgotten, only if its lease is gone (ARGV[2] = "1": or
#: its process is known dead), in one step: it cannot renew and take a batch in between.
RECLAIM = """
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do n = n + 1 end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return n
"""


def consumer_name(node: str) -> str:
    """``node`` (Celery's node name) and this process: two intakes never share a list, even two
    started with the same node name, or one restarted while the old one still stores."""
    return f"{node}:{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def _started(pid: int) -> int:
    try:
        return int(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0


def known_dead(consumer: str) -> bool:
    """An intake of this machine whose process is gone (by pid and start time): its list can
    be put back at once rather than after its lease."""
    parts = consumer.rsplit(":", 3)
    if len(parts) != 4 or parts[1] != socket.gethostname():
        return False
    try:
        pid, started = int(parts[2]), int(parts[3])
    except ValueError:
        return False
    return _started(pid) != started


def results_queue_for(name: str) -> Queue:
    # The same declaration Celery makes for a missing queue, so both sides agree on it.
    return Queue(name, Exchange(name), routing_key=name)


@dataclass(frozen=True)
class Keys:
    """The Redis keys of one central worker's intake."""

    queue: str
    consumer: str

    @property
    def processing(self) -> str:
        return PROCESSING_KEY.format(consumer=self.consumer)

    @property
    def lease(self) -> str:
        return LEASE_KEY.format(consumer=self.consumer)

    def of(self, consumer: str) -> "Keys":
        return Keys(self.queue, consumer)


def decode(raw: bytes) -> tuple[str | None, object]:
    """A message as kombu's Redis transport stores it -> (task name, Celery body); ValueError
    when it is not one (anyone on the broker can push anything)."""
    try:
        envelope = json.loads(raw)
        headers, props = envelope["headers"], envelope["properties"]
        if envelope.get("content-type") != "application/json":
            raise ValueError(f"content type {envelope.get('content-type')!r} is not JSON")
        body = envelope["body"]
        if props.get("body_encoding") == "base64":
            body = base64.b64decode(body, validate=True)
        return headers.get("task"), json.loads(body)
    except (KeyError, TypeError, AttributeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a task message: {exc!r}") from None


def split(bodies) -> tuple[list[dict], list[dict], list]:
    """Sort (task name, body) pairs into started notices, results and ones we cannot use."""
    started, finished, bad = [], [], []
    for name, body in bodies:
        try:
            item = body[0][0]
            if not isinstance(item, dict):
                raise TypeError("first argument is not an object")
        except (TypeError, IndexError, KeyError) as exc:
            bad.append(exc)
            continue
        if name == names.TASK_STARTED:
            started.append(item)
        elif name == names.STORE_RESULT:
            finished.append(item)
        else:
            bad.append(f"unexpected task {name!r}")
    return started, finished, bad


def _first_arg(body) -> bool:
    try:
        return isinstance(body[0][0], dict)
    except (TypeError, IndexError, KeyError):
        return False


def store(raws: list[bytes]) -> None:
    """Store one batch of raw messages; what cannot be read is logged and dropped."""
    bodies = []
    for raw in raws:
        try:
            bodies.append(decode(raw))
        except ValueError as exc:
            logger.error("dropping an undecodable message on the results queue: %s", exc)
    # Output chunks first, in the order they came: each before the result that follows it.
    chunks = [b[0][0] for name, b in bodies if name == names.TASK_OUTPUT and _first_arg(b)]
    bodies = [(name, b) for name, b in bodies if name != names.TASK_OUTPUT]
    if chunks:
        live.relay(chunks)
    started, finished, bad = split(bodies)
    for why in bad:
        logger.error("dropping malformed message on the results queue: %s", why)
    results.store_batch(started, finished)


class Intake:
    """Takes the results list in batches on a thread of its own, as the module says."""

    def __init__(self, app, consumer: str, queue: str, clock=time.monotonic):
        self.app, self.clock = app, clock
        self.keys = Keys(queue, consumer)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.reclaimed_at = float("-inf")

    # -- the broker's side -----------------------------------------------------------------
    def _renew(self, client) -> None:
        with client.pipeline(transaction=False) as pipe:
            pipe.sadd(CONSUMERS_KEY, self.keys.consumer)
            pipe.set(self.keys.lease, 1, ex=LEASE)
            pipe.execute()

    def _put_back(self, client, keys: Keys) -> int:
        return client.eval(PUT_BACK, 2, keys.processing, keys.queue)

    def _reclaim(self, client) -> None:
        """Put back the lists of intakes that died (lease gone, or process gone)."""
        self.reclaimed_at = self.clock()
        for raw in client.smembers(CONSUMERS_KEY):
            other = raw.decode() if isinstance(raw, bytes) else raw
            if other == self.keys.consumer:
                continue
            keys = self.keys.of(other)
            dead = "1" if known_dead(other) else "0"
            n = client.eval(RECLAIM, 4, keys.processing, keys.queue, keys.lease, CONSUMERS_KEY,
                            other, dead)  # fmt: skip
            if n > 0:
                logger.warning("put back %d results intake %s took and did not store", n, other)

    def _take(self, client) -> list[bytes]:
        first = client.blmove(self.keys.queue, self.keys.processing, WAIT, "RIGHT", "LEFT")
        if first is None:
            return []
        return [first, *client.eval(TAKE_MORE, 2, self.keys.queue, self.keys.processing,
                                    FLUSH_EVERY - 1)]  # fmt: skip

    # -- one round -------------------------------------------------------------------------
    def round(self, client) -> int:
        """Take a batch, store it, acknowledge it; how many were stored."""
        if self.clock() - self.reclaimed_at > RECLAIM_EVERY:
            self._reclaim(client)
        batch = self._take(client)
        if not batch:
            return 0
        close_old_connections()
        dead = self._store(batch)
        if dead is None:
            # The database is down, locked for too long, or refuses every write (a read-only
            # replica after a failover): the batch goes back to the broker so that nothing an
            # agent reported is lost, and is taken again after a pause.
            close_old_connections()
            self._put_back(client, self.keys)
            self.stopping.wait(BACKOFF)
            return 0
        with client.pipeline(transaction=True) as pipe:
            if dead:
                pipe.lpush(DEAD_KEY, *dead)
                pipe.ltrim(DEAD_KEY, 0, DEAD_KEEP - 1)
            pipe.delete(self.keys.processing)  # the acknowledgement: the rest is committed
            pipe.execute()
        return len(batch) - len(dead)

    def _store(self, batch: list[bytes]) -> list[bytes] | None:
        """Store ``batch``; the messages that could not be stored while others were (kept
        aside), or None when the database took none of it (the batch must go back)."""
        try:
            store(batch)
            return []
        except (OperationalError, InterfaceError):
            logger.exception("could not store %d reports; put back", len(batch))
            return None
        except Exception:
            # Something in one message breaks the batch: store them one by one, so only that
            # message is set aside and the intake keeps moving (storing what was stored again
            # changes nothing).
            logger.exception("batch of %d failed; storing one by one", len(batch))
        dead, stored, refused = [], 0, 0
        for raw in batch:
            try:
                store([raw])
                stored += 1
            except (OperationalError, InterfaceError):
                logger.exception("could not store a report; the batch is put back")
                return None
            except Exception as exc:
                logger.exception("a report that cannot be stored is kept aside in %s", DEAD_KEY)
                dead.append(raw)
                refused += isinstance(exc, DatabaseError)
        if not stored and refused == len(batch) > 1:
            return None  # the database refused every one of them: its fault, not theirs
        return dead

    # -- the threads -----------------------------------------------------------------------
    def renew_forever(self) -> None:
        """The lease, renewed apart from the storing: a batch that takes long to store (a
        locked database) must not look like a dead intake's and be stored twice meanwhile."""
        while not self.stopping.is_set():
            try:
                with self.app.connection_for_write() as conn:
                    while not self.stopping.is_set():
                        self._renew(conn.default_channel.client)
                        self.stopping.wait(LEASE / 3)
            except Exception:
                self.stopping.wait(BACKOFF)

    def run(self) -> None:
        down = False
        while not self.stopping.is_set():
            try:
                with self.app.connection_for_write() as conn:
                    client = conn.default_channel.client
                    # Declared as Celery would: agents' publishes are routed by this binding.
                    results_queue_for(self.keys.queue)(conn.default_channel).declare()
                    self._renew(client)
                    if down:
                        logger.warning("results intake: broker reachable again")
                    down = False
                    while not self.stopping.is_set():
                        self.round(client)
            except BROKER_ERRORS as exc:
                if not down:
                    logger.warning("results intake: broker unreachable (%s); retrying", exc)
                down = True
                self.stopping.wait(BACKOFF)
            except Exception:
                logger.exception("results intake failed; restarting it")
                self.stopping.wait(BACKOFF)

    def start(self) -> None:
        for target, name in ((self.run, "cmdb-intake"), (self.renew_forever, "cmdb-lease")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        # A batch being stored finishes and is acknowledged; one that cannot be in time is
        # put back by another intake once this process is gone.
        for thread in self.threads:
            thread.join(timeout=WAIT + 10)


class IntakeStep(bootsteps.StartStopStep):
    """Runs the Intake inside the central worker."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        self.intake = None

    def start(self, worker):
        self.intake = Intake(worker.app, consumer_name(worker.hostname),
                             settings.CMDB["RESULTS_QUEUE"])  # fmt: skip
        self.intake.start()

    def stop(self, worker):
        if self.intake:
            self.intake.stop()
