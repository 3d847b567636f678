"""The central worker's intake: agents' "started" notices and results, stored in batches.

Agents send both as ordinary Celery task messages (the result is the link callback of
workers.run_command) to the results queue. A Celery task per message costs a round of Celery
overhead and a transaction each: a few hundred per second on SQLite. This consumer takes
up to FLUSH_EVERY messages, or whatever arrived within FLUSH_INTERVAL, and stores them in one
transaction (results.store_batch); messages are acknowledged only after the commit, so a
central worker that dies mid-batch loses nothing (they are delivered again; storing is
idempotent).
"""

import contextlib
import logging

from celery import bootsteps
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from kombu import Consumer, Exchange, Queue

from cmdb.jobs import results
from wire import names

logger = logging.getLogger(__name__)

FLUSH_EVERY = 500
FLUSH_INTERVAL = 0.005
#: Unacknowledged messages the broker hands over at once; more than one batch keeps it busy.
PREFETCH = 2 * FLUSH_EVERY


def results_queue_for(name: str) -> Queue:
    # The same declaration Celery makes for a missing queue, so both sides agree on it.
    return Queue(name, Exchange(name), routing_key=name)


def split(messages) -> tuple[list[dict], list[dict], list]:
    """Sort decoded task messages into started notices, results and ones we cannot use."""
    started, finished, bad = [], [], []
    for body, message in messages:
        name = message.headers.get("task")
        try:
            args = body[0]
            item = args[0]
            if not isinstance(item, dict):
                raise TypeError("first argument is not an object")
        except (TypeError, IndexError, KeyError) as exc:
            bad.append((message, exc))
            continue
        if name == names.TASK_STARTED:
            started.append(item)
        elif name == names.STORE_RESULT:
            finished.append(item)
        else:
            bad.append((message, f"unexpected task {name!r}"))
    return started, finished, bad


class ResultIntake(bootsteps.ConsumerStep):
    """Consumes settings.CMDB["RESULTS_QUEUE"] in batches inside the central worker."""

    def __init__(self, parent, **kwargs):
        self.buffer: list = []
        self.flush_every = FLUSH_EVERY
        #: With acks (the default) a report leaves the broker only once it is committed. Off,
        #: kombu's Redis transport skips two round trips per message (the unacked bookkeeping
        #: on delivery and the ack), at the price of losing the reports in the current batch
        #: (at most FLUSH_INTERVAL's worth) if the central worker dies; their tasks then end
        #: "lost" by the monitor's deadline.
        self.acks = settings.CMDB["INTAKE_ACKS"]
        super().__init__(parent, **kwargs)

    def get_consumers(self, channel):
        queue = results_queue_for(settings.CMDB["RESULTS_QUEUE"])
        return [
            Consumer(
                channel,
                queues=[queue],
                callbacks=[self.on_message],
                accept=["json"],
                prefetch_count=PREFETCH,
                no_ack=not self.acks,
                on_decode_error=self.on_decode_error,
            )
        ]

    def start(self, c):
        super().start(c)
        # Once per start: the consumer restarts this step after every broker loss.
        self.tref = c.timer.call_repeatedly(FLUSH_INTERVAL, self.flush)

    def _close(self, c, cancel_consumers=True):
        if getattr(self, "tref", None) is not None:
            c.timer.cancel(self.tref)
            self.tref = None
        if c.connection is not None:
            return super()._close(c, cancel_consumers)
        # The broker is gone and Celery has dropped the connection (consumer.py sets it to None
        # before it restarts the steps): Celery's own _close would ask None for its errors, an
        # AttributeError the issue-14 fault run logged at broker losses. What is left to close
        # went with the connection.
        for consumer in self.consumers or []:
            with contextlib.suppress(Exception):
                consumer.channel and consumer.channel.close()

    def on_decode_error(self, message, exc):
        # Without this kombu raises, and the worker stops for good: the message goes back to
        # the queue and stops the next one too. Anyone on the broker could send one.
        logger.error("dropping an undecodable message on the results queue: %s", exc)
        if self.acks:
            message.ack()

    def on_message(self, body, message):
        self.buffer.append((body, message))
        if len(self.buffer) >= self.flush_every:
            self.flush()

    def flush(self):
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        try:
            self.store(batch)
        except (OperationalError, InterfaceError):
            # The database is down or locked for too long: give the messages back to the
            # broker so that nothing an agent reported is lost.
            logger.exception("could not store %d reports; requeued", len(batch))
            close_old_connections()
            if self.acks:
                for _, message in batch:
                    message.requeue()
            return
        except Exception:
            # Something in one message breaks the batch: store them one by one, so only that
            # message is set aside and the intake keeps moving.
            logger.exception("batch of %d failed; storing one by one", len(batch))
            requeued = set()
            for item in batch:
                try:
                    self.store([item])
                except (OperationalError, InterfaceError):
                    # The database, not the report: it must come again, not be dropped.
                    logger.exception("could not store a report; requeued")
                    close_old_connections()
                    if self.acks:
                        item[1].requeue()
                    requeued.add(id(item))
                except Exception:
                    logger.exception("dropping a report that cannot be stored")
            batch = [item for item in batch if id(item) not in requeued]
        if self.acks:
            for _, message in batch:
                message.ack()

    @staticmethod
    def store(batch) -> None:
        started, finished, bad = split(batch)
        for _message, why in bad:
            logger.error("dropping malformed message on the results queue: %s", why)
        results.store_batch(started, finished)
