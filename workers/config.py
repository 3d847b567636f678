"""The agent's settings: every environment variable the agent reads is read here, once.

REDIS_URL             the broker (default: the local one `make up` starts)
CMDB_BROKER_MASTER_NAME  the Sentinel service when REDIS_URL is sentinel://... (as the server's)
CMDB_CENTRAL_QUEUE    where registrations go (default cmdb.central)
CMDB_RESULTS_QUEUE    where notices and results go when a message names none
CMDB_BROKER_TIMEOUT   seconds to wait for the broker when connecting (4)
CMDB_AGENT_PUBKEY     the server's public key (PEM); no key, no agent
CMDB_AGENT_IP         the queue to consume (default: the default-route interface's IPv4)
CMDB_AGENT_CONCURRENCY, CMDB_AGENT_LOGLEVEL   the worker's pool size (4) and log level
CMDB_AGENT_STATE_DIR  where run-once claims are kept (/var/lib/cmdb-agent for root)
CMDB_AGENT_ROOT       treat this folder as "/" for pushes and fetches (several agents on
                      one machine: the demo and the tests)
CMDB_SPOOL_DIR        where command output is spooled (the system's temp folder)
CMDB_AGENT_HEARTBEAT  seconds between signed heartbeats (2; the server's CMDB_AGENT_LOST_AFTER,
                      7, must be a few of them)
CMDB_AGENT_REMOTE_CONTROL  1 (the default): obey ping; 0: no remote control at all, as the
                      unit runs it and as a host's broker user needs (deploy/BROKER.md)
"""

import os
from dataclasses import dataclass
from pathlib import Path

from wire import names, transport

#: Seconds one BRPOP of the agent's queue waits for a message before it is sent again.
BRPOP_TIMEOUT = 5


@dataclass(frozen=True)
class AgentSettings:
    redis_url: str
    central_queue: str
    results_queue: str
    broker_timeout: float
    pubkey: str | None
    ip: str | None
    concurrency: int
    loglevel: str
    state_dir: Path
    root: str | None
    spool_dir: str | None
    heartbeat: float = 5.0
    remote_control: bool = True
    broker_master_name: str | None = None

    @classmethod
    def from_environ(cls, environ=os.environ) -> "AgentSettings":
        central = environ.get("CMDB_CENTRAL_QUEUE") or names.DEFAULT_CENTRAL_QUEUE
        state = environ.get("CMDB_AGENT_STATE_DIR") or (
            "/var/lib/cmdb-agent" if os.geteuid() == 0 else "~/.local/state/cmdb-agent"
        )
        return cls(
            redis_url=environ.get("REDIS_URL") or names.DEFAULT_REDIS_URL,
            central_queue=central,
            results_queue=environ.get("CMDB_RESULTS_QUEUE") or names.default_results_queue(central),
            broker_timeout=float(environ.get("CMDB_BROKER_TIMEOUT") or 4),
            pubkey=environ.get("CMDB_AGENT_PUBKEY") or None,
            ip=environ.get("CMDB_AGENT_IP") or None,
            concurrency=int(environ.get("CMDB_AGENT_CONCURRENCY") or 4),
            loglevel=environ.get("CMDB_AGENT_LOGLEVEL") or "info",
            state_dir=Path(state).expanduser(),
            root=environ.get("CMDB_AGENT_ROOT") or None,
            spool_dir=environ.get("CMDB_SPOOL_DIR") or None,
            # At least 0.2 s: 0 would make the worker's timer send nothing else.
            heartbeat=max(0.2, float(environ.get("CMDB_AGENT_HEARTBEAT") or 2)),
            remote_control=(environ.get("CMDB_AGENT_REMOTE_CONTROL") or "1") != "0",
            broker_master_name=environ.get("CMDB_BROKER_MASTER_NAME") or None,
        )

    @property
    def claims_folder(self) -> Path:
        return self.state_dir / "claims"

    def celery_config(self) -> dict:
        config = transport.celery_config(self.redis_url, self.central_queue, self.broker_timeout,
                                         master_name=self.broker_master_name)  # fmt: skip
        # Celery declares a queue each time it publishes to it, and kombu's declaring writes the
        # exchange's binding table in Redis: everything here goes through the anonymous exchange
        # (straight to the list), so the agent declares nothing and needs no write there.
        config["task_routes"] = {"*": {"declare": []}}
        config["worker_enable_remote_control"] = self.remote_control
        # kombu's BRPOP waits 1 s for a message, then asks again: one command a second per idle
        # host, 10,000 a second at 10,000 hosts. A message still arrives at once (BRPOP returns
        # when it is pushed); what waits longer is a warm shutdown (it reads the BRPOP under way)
        # and noticing a half-open connection (BRPOP_TIMEOUT + kombu's health check, 25 s).
        config["broker_transport_options"] = {**config["broker_transport_options"],
                                              "polling_interval": BRPOP_TIMEOUT}  # fmt: skip
        return config
