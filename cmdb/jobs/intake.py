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
- this worker restarting (the same node name) first puts its predecessor's list back;
- a worker that never comes back stops renewing its lease (LEASE seconds), and any live intake
  puts its list back;
- the database failing puts the batch back (after a pause, not in a hot loop).
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
import threading
import time
from dataclasses import dataclass

from celery import bootsteps
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from kombu import Exchange, Queue

from cmdb.jobs import results
from cmdb.jobs.broker import BROKER_ERRORS
from wire import names

logger = logging.getLogger(__name__)

FLUSH_EVERY = 500
#: The server's own keys (no agent may touch them: its broker user has no right on cmdb:intake).
PROCESSING_KEY = "cmdb:intake:{consumer}:processing"
LEASE_KEY = "cmdb:intake:{consumer}:lease"
#: Every central worker's node name that has taken from the results list.
CONSUMERS_KEY = "cmdb:intake:consumers"
#: Seconds a take waits for the first message of a batch (and so, between lease renewals).
WAIT = 1.0
#: Seconds a worker's claim on its processing list lasts without renewal; longer than any
#: batch takes to store, or a live worker's batch would be put back and stored twice.
LEASE = 60
#: Seconds between looks for the lists of workers whose lease ran out.
RECLAIM_EVERY = 10.0
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


def store(raws: list[bytes]) -> None:
    """Store one batch of raw messages; what cannot be read is logged and dropped."""
    bodies = []
    for raw in raws:
        try:
            bodies.append(decode(raw))
        except ValueError as exc:
            logger.error("dropping an undecodable message on the results queue: %s", exc)
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
        self.thread: threading.Thread | None = None
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
        """Put back the lists of workers whose lease ran out (they died and did not return)."""
        self.reclaimed_at = self.clock()
        for raw in client.smembers(CONSUMERS_KEY):
            other = raw.decode() if isinstance(raw, bytes) else raw
            if other == self.keys.consumer or client.exists(self.keys.of(other).lease):
                continue
            if n := self._put_back(client, self.keys.of(other)):
                logger.warning("put back %d results intake %s took and did not store", n, other)
            client.srem(CONSUMERS_KEY, other)

    def _take(self, client) -> list[bytes]:
        first = client.blmove(self.keys.queue, self.keys.processing, WAIT, "RIGHT", "LEFT")
        if first is None:
            return []
        return [first, *client.eval(TAKE_MORE, 2, self.keys.queue, self.keys.processing,
                                    FLUSH_EVERY - 1)]  # fmt: skip

    # -- one round -------------------------------------------------------------------------
    def round(self, client) -> int:
        """Renew the lease, take a batch, store it, acknowledge it; how many were stored."""
        self._renew(client)
        if self.clock() - self.reclaimed_at > RECLAIM_EVERY:
            self._reclaim(client)
        batch = self._take(client)
        if not batch:
            return 0
        try:
            self._store(batch)
        except (OperationalError, InterfaceError):
            # The database is down or locked for too long: the batch goes back to the broker
            # so that nothing an agent reported is lost, and is taken again after a pause.
            logger.exception("could not store %d reports; put back", len(batch))
            close_old_connections()
            self._put_back(client, self.keys)
            self.stopping.wait(BACKOFF)
            return 0
        client.delete(self.keys.processing)  # the acknowledgement: all of it is committed
        return len(batch)

    def _store(self, batch: list[bytes]) -> None:
        close_old_connections()
        try:
            store(batch)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            # Something in one message breaks the batch: store them one by one, so only that
            # message is set aside and the intake keeps moving. A database error on one of
            # them is the database's, not the report's: the whole batch goes back (storing
            # what was stored again changes nothing).
            logger.exception("batch of %d failed; storing one by one", len(batch))
            for raw in batch:
                try:
                    store([raw])
                except (OperationalError, InterfaceError):
                    raise
                except Exception:
                    logger.exception("dropping a report that cannot be stored")

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> None:
        down = False
        while not self.stopping.is_set():
            try:
                with self.app.connection_for_write() as conn:
                    client = conn.default_channel.client
                    # Declared as Celery would: agents' publishes are routed by this binding.
                    results_queue_for(self.keys.queue)(conn.default_channel).declare()
                    # Our node name is ours alone: what a predecessor of it took and did not
                    # acknowledge is put back before anything else.
                    if n := self._put_back(client, self.keys):
                        logger.warning("put back %d results this worker took before", n)
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
        self.thread = threading.Thread(target=self.run, name="cmdb-intake", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            # A batch being stored finishes and is acknowledged; one that cannot be in time is
            # put back by the next start of this node (its processing list stays).
            self.thread.join(timeout=WAIT + 10)


class IntakeStep(bootsteps.StartStopStep):
    """Runs the Intake inside the central worker."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        self.intake = None

    def start(self, worker):
        self.intake = Intake(worker.app, worker.hostname, settings.CMDB["RESULTS_QUEUE"])
        self.intake.start()

    def stop(self, worker):
        if self.intake:
            self.intake.stop()
