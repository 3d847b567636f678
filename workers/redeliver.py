"""Messages this agent was handed and never started, given back to its queue when it connects.

kombu's Redis transport keeps every message it has handed a consumer, and that consumer has not
acknowledged, in the consumer's unacked hash (its own keys: wire.names.UNACKED_KEYS), and puts
them back only once they are older than the visibility timeout, an hour. Celery forgets the
messages it had reserved whenever its connection is lost, and an agent killed with SIGKILL takes
them with it; either way they sat there for the hour while their tasks' reach deadlines passed.

When its consumer (re)connects, before it takes anything, the agent puts every one of them back
on its queue: whatever it had reserved before is gone from its memory by then. A message that
had in fact started (its acknowledgement lost with the connection) comes back too, and is then
refused by the run-once claims (workers.guard): giving back is safe because running twice is
impossible. The server's fence decides what is too late (cmdb.jobs.sweeps).

Only ZRANGE, HGET and a MULTI of HDEL, ZREM and RPUSH, on this agent's own keys and queues: what
its broker user may do (wire.transport.agent_acl_rules).
"""

import json
import logging

from celery import bootsteps

logger = logging.getLogger(__name__)


def give_back(client, unacked_key: str, index_key: str, queues) -> int:
    """Put the messages in ``unacked_key`` back on their queues (only ``queues``); how many."""
    given = 0
    for tag in client.zrange(index_key, 0, -1):
        raw = client.hget(unacked_key, tag)
        with client.pipeline(transaction=True) as pipe:
            pipe.hdel(unacked_key, tag)
            pipe.zrem(index_key, tag)
            try:
                message, _exchange, routing_key = json.loads(raw)
            except (TypeError, ValueError):
                message, routing_key = None, None
            if routing_key in queues:
                message.setdefault("headers", {})["redelivered"] = True
                pipe.rpush(routing_key, json.dumps(message))  # taken next (BRPOP takes the right)
                given += 1
            elif raw is not None:
                logger.warning("dropped an unacknowledged message for %r: not ours", routing_key)
            pipe.execute()
    return given


def redeliver_step(agent):
    """The consumer step, for ``agent`` (workers.agent.Agent)."""

    class Redeliver(bootsteps.StartStopStep):
        requires = ("celery.worker.consumer.connection:Connection",)

        def start(self, c):
            options = c.app.conf.broker_transport_options
            try:
                with c.app.connection_for_write() as conn:
                    n = give_back(conn.default_channel.client, options["unacked_key"],
                                  options["unacked_index_key"], agent.identity)  # fmt: skip
            except Exception:
                logger.warning("could not give back unacknowledged messages", exc_info=True)
                return
            if n:
                logger.warning("gave back %d message(s) handed to this host's agent before", n)

    return Redeliver
