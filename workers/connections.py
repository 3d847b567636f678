"""One broker connection per agent process for everything but waiting for messages.

kombu gives every channel of every connection two Redis connection pools of its own: the
consumer's BRPOP and its bookkeeping of taken messages, remote control, the event dispatcher
(our signed heartbeat), the producers of registrations, started notices and results, and the
agent's own client (claims, cancel marks, files) each held a socket or two, and every prefork
child that ran a task held three more: 8 for the main process plus 3 per child, which capped
one Redis at its default 10,000 clients at about 500 hosts (deploy/agent/README.md).

Here each agent process sends every command through one shared connection, taken in turn
(redis-py's BlockingConnectionPool of one: a thread waits its turn, never opens another), except
what must hold a connection of its own while it waits: the consumer's BRPOP, and remote
control's PSUBSCRIBE when it is on. A prefork child opens its shared connection for a task and
closes it when the task (its result included) is done: an idle agent holds two connections,
and one more for each command it runs at the moment. kombu's channels still check the broker
with a PING when they are made, on the connection they would keep for BRPOP; a channel that
does not consume gives it back at once.

Only for redis:// and rediss:// brokers: a Sentinel broker keeps kombu's own pools (its
connections follow the master, which a pool of one shared across channels would not).
"""

import threading

import redis
from kombu.transport import redis as kombu_redis

#: Seconds a command waits for its process's shared connection while another has it; longer
#: than any one command the agent sends takes (a file chunk, a pipeline of claims).
WAIT = 60.0

_pools: dict[tuple, redis.BlockingConnectionPool] = {}
_lock = threading.Lock()


def shared_pool(params: dict) -> redis.BlockingConnectionPool:
    """This process's one connection to the broker that ``params`` (kombu's) name."""
    params = {k: v for k, v in params.items() if k != "max_connections"}
    key = tuple(sorted((k, repr(v)) for k, v in params.items()))
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = redis.BlockingConnectionPool(max_connections=1, timeout=WAIT,
                                                              **params)  # fmt: skip
        return pool


class SharedChannel(kombu_redis.Channel):
    """kombu's Redis channel, its commands on the process's shared connection."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The PING kombu sent on its BRPOP pool: nothing waits on it until this channel
        # consumes (BRPOP then connects again), so it holds no socket meanwhile.
        pool = self._async_pool
        if pool is not None:
            pool.disconnect(inuse_connections=False)

    def _get_pool(self, asynchronous=False):
        if asynchronous:  # BRPOP and PSUBSCRIBE: each keeps its connection while it waits
            return super()._get_pool(asynchronous=True)
        params = self._connparams(asynchronous=False)
        self.keyprefix_fanout = self.keyprefix_fanout.format(db=params["db"])
        return shared_pool(params)

    def _disconnect_pools(self):
        # The shared connection is the process's, not this channel's: a channel that closes
        # lets go of it (and its own BRPOP pool), and leaves it to the others. A connection
        # the broker dropped is made again by the next command (redis-py).
        async_pool, self._async_pool, self._pool = self._async_pool, None, None
        if async_pool is not None:
            async_pool.disconnect()

    def shared_client(self) -> redis.Redis:
        """A client on the process's shared connection: for the agent's own commands."""
        return self._create_client(asynchronous=False)


def release() -> None:
    """Close this process's shared connection (the next command opens it again): a pool child
    does when its task has ended, so that an idle agent holds its main process's two only."""
    with _lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.disconnect()


def share_connections() -> None:
    """From now on, every Redis broker connection this process makes shares one socket for
    its commands (the agent's worker, at its start: workers.celery)."""
    kombu_redis.Transport.Channel = SharedChannel
