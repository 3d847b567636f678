"""The agent's signed heartbeat: how the server tells a live agent from a dead or restarted one.

Celery's own worker-heartbeat and worker-offline events carry no signature: anyone who can
publish on the broker could send "worker-offline" or a new pid in an agent's name and make the
server call every command it runs lost. So the server's verdicts rest on these instead: a
Heartbeat (wire.messages) signed with the agent's key, naming the hosts it was started for, its
pid and its clock, sent as a worker event (the same fan-out, fire-and-forget path as Celery's,
so nothing piles up in a queue while the central worker is down).
"""

import contextlib
import itertools
import logging
import secrets
import time

from celery import bootsteps

from wire import names
from wire.messages import Heartbeat

logger = logging.getLogger(__name__)


def heartbeat_step(agent) -> type:
    """The consumer step of this agent (workers.agent.Agent), for ``app.steps["consumer"]``."""
    return type("SignedHeartbeat", (SignedHeartbeat,), {"agent": agent})


class SignedHeartbeat(bootsteps.StartStopStep):
    """A consumer step: one heartbeat at start, every ``settings.heartbeat`` seconds, and an
    offline one when the worker shuts down."""

    requires = ("celery.worker.consumer.events:Events",)  # after it: its dispatcher if it made one
    agent = None  # set by heartbeat_step
    #: This process's heartbeats: which process, and how many so far.
    boot = secrets.token_hex(8)
    counter = itertools.count(1)

    def __init__(self, c, **kwargs):
        self.tref = None
        self.dispatcher = None
        super().__init__(c, **kwargs)

    def start(self, c):
        # The agent runs without Celery's own (unsigned) heartbeat, gossip and task events, so
        # Celery's event step sends nothing and makes no dispatcher: these are the only events.
        # A new one each time the consumer (re)connects, as Celery's own step does.
        self.close_own(c)
        self.dispatcher = c.event_dispatcher or c.app.events.Dispatcher(
            c.connection_for_write(), hostname=c.hostname, groups=["worker"]
        )
        self.send(c)
        self.tref = c.timer.call_repeatedly(self.agent.settings.heartbeat, self.send, (c,))

    def stop(self, c):
        if self.tref is not None:
            c.timer.cancel(self.tref)
            self.tref = None

    def shutdown(self, c):
        self.stop(c)
        self.send(c, offline=True)
        self.close_own(c)

    def close_own(self, c) -> None:
        """Close the dispatcher this step made (not Celery's, which Celery closes)."""
        dispatcher, self.dispatcher = self.dispatcher, None
        if dispatcher is not None and dispatcher is not c.event_dispatcher:
            with contextlib.suppress(Exception):
                dispatcher.connection.close()

    def send(self, c, offline: bool = False) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None or not self.agent.identity:
            return
        beat = Heartbeat(hosts=sorted(self.agent.identity), agent=c.hostname,
                         agent_pid=self.agent.pid, at=time.time(), boot=self.boot,
                         seq=next(self.counter), offline=offline)  # fmt: skip
        try:
            dispatcher.send(names.HEARTBEAT_EVENT, heartbeat=beat.signed(self.agent.own_key())
                            .to_wire(), retry=not offline)  # fmt: skip
        except Exception:  # the broker is away: the next one, or the silence, will tell
            logger.warning("could not send a heartbeat", exc_info=True)
