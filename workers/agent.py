"""What one agent process holds: its settings, the server's key, its claims and a broker client.

One object, made with the app and handed to every task body, instead of module globals: a test
builds its own with other settings, and nothing is reached through a hidden import.
"""

import dataclasses
import os

from wire import signing
from workers import claims, orphans
from workers.config import AgentSettings


class Agent:
    def __init__(self, app, settings: AgentSettings):
        self.app, self.settings = app, settings
        #: The worker's main process id: the server compares it with the pid in heartbeats to
        #: tell a restarted agent (whose running commands are lost) from a live one.
        self.pid = os.getpid()
        self._public_key = None
        self._own_key = None
        self._ledger = None
        self._records = None
        self._connection = None
        #: The hosts (IPs) this agent serves, fixed when the worker starts: what it consumes
        #: then, before anyone can reach it. Remote control (add_consumer) cannot change it.
        self.identity: frozenset[str] = frozenset()

    def use_pubkey(self, path: str) -> None:
        """The server's public key given on the command line (--pubkey) rather than in
        $CMDB_AGENT_PUBKEY; before the worker starts, so that its pool inherits it."""
        self.settings = dataclasses.replace(self.settings, pubkey=path)
        self._public_key = None

    def server_key(self):
        """The server's public key; SigningKeyError when there is none or it is unreadable."""
        if self._public_key is None:
            if not self.settings.pubkey:
                raise signing.SigningKeyError(signing.E_NO_PUBKEY)
            self._public_key = signing.load_public_key(self.settings.pubkey)
        return self._public_key

    def own_key(self):
        """This agent's own Ed25519 key, made on first start in its state folder (0600): what it
        signs its registration with, and what the server accepts or not (`manage.py keys`)."""
        if self._own_key is None:
            self.settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own_key = signing.generate_key_pair(self.settings.state_dir / "agent_key")
        return self._own_key

    def ledger(self) -> claims.Ledger:
        """The host's own run-once claims (OSError when its folder cannot be made)."""
        if self._ledger is None:
            self._ledger = claims.Ledger(self.settings.claims_folder)
        return self._ledger

    def running(self) -> orphans.Records:
        """The records of the commands this host's agents run (workers.orphans)."""
        if self._records is None:
            self._records = orphans.Records(self.settings.state_dir / "running")
        return self._records

    def redis(self):
        """The broker's own Redis client (kombu's), so Sentinel and TLS URLs work as for Celery:
        in a worker, on the connection its process shares for everything (workers.connections)."""
        if self._connection is None:
            self._connection = self.app.connection_for_write()
        channel = self._connection.default_channel
        shared = getattr(channel, "shared_client", None)
        return shared() if shared is not None else channel.client

    def started_worker(self, queues) -> None:
        """In the worker's main process, before the pool forks and before it consumes
        anything: its identity is the IP queues it was started on."""
        self.pid = os.getpid()
        self.identity = frozenset(queues)

    def forked(self) -> None:
        """In each pool child: a connection made before fork shares its socket with the parent."""
        self._connection = None
