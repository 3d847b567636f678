"""The central worker's monitor: agent liveness from heartbeats, and the sweeps that end
overdue host tasks (cmdb.jobs.sweeps) on a thread of its own."""

import logging
import threading
import time
from dataclasses import dataclass, field

from celery import bootsteps
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from cmdb.jobs import signer, sweeps

logger = logging.getLogger(__name__)

E_LOST_SILENT = "agent {agent} stopped sending heartbeats {silence:.0f} s ago while it ran"
E_LOST_RESTARTED = "agent {agent} restarted (pid {old} -> {new}) while it ran"
E_LOST_OFFLINE = "agent {agent} shut down while it ran"


@dataclass
class AgentSighting:
    pid: int | None
    at: float
    offline: bool = False


@dataclass
class Liveness:
    """What heartbeats say about each agent, by Celery node name. Pure: time is passed in."""

    lost_after: float
    started: float
    agents: dict[str, AgentSighting] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: When any worker (this central worker included) was last heard.
    last_event: float | None = None

    def heard(self, agent: str, pid: int | None, at: float, offline: bool = False) -> None:
        with self.lock:
            self.agents[agent] = AgentSighting(pid, at, offline)
            self.last_event = at

    def deaf(self, now: float) -> bool:
        """True when nothing at all was heard lately: our event connection is down, so the
        silence of agents says nothing about them."""
        last = self.last_event if self.last_event is not None else self.started
        return now - last > self.lost_after

    def online(self, now: float) -> set[str]:
        with self.lock:
            return {
                name
                for name, s in self.agents.items()
                if not s.offline and now - s.at <= self.lost_after
            }

    def verdict(self, agent: str, pid: int | None, now: float) -> str | None:
        """Why a task running on ``agent`` (main pid ``pid``) is lost, or None if it may live."""
        with self.lock:
            seen = self.agents.get(agent)
        if seen is None:
            # Never heard since this monitor started: give the agent a full window first.
            silence = now - self.started
            if silence > self.lost_after:
                return E_LOST_SILENT.format(agent=agent, silence=silence)
            return None
        if pid and seen.pid and seen.pid != pid:
            return E_LOST_RESTARTED.format(agent=agent, old=pid, new=seen.pid)
        if seen.offline and now - seen.at > min(5.0, self.lost_after):
            return E_LOST_OFFLINE.format(agent=agent)
        if now - seen.at > self.lost_after:
            return E_LOST_SILENT.format(agent=agent, silence=now - seen.at)
        return None


class Monitor:
    """Listens to worker events and sweeps overdue host tasks; two daemon threads."""

    #: Seconds between looks for fetched files past their keeping time.
    EXPIRY_EVERY = 60.0

    def __init__(self, app, settings, clock=time.time):
        self.app = app
        self.cfg = settings
        self.clock = clock
        self.liveness = Liveness(settings["AGENT_LOST_AFTER"], clock())
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._receiver = None
        self.last_expiry = 0.0

    # -- events ------------------------------------------------------------------------------
    def on_event(self, event: dict) -> None:
        kind = event.get("type", "")
        if not kind.startswith("worker-"):
            return
        self.liveness.heard(
            event.get("hostname", ""),
            event.get("pid"),
            self.clock(),
            offline=(kind == "worker-offline"),
        )

    def listen(self) -> None:
        handlers = {"*": self.on_event}
        while not self.stopping.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    self._receiver = self.app.events.Receiver(conn, handlers=handlers)
                    self._receiver.capture(limit=None, timeout=None, wakeup=False)
            except Exception:
                if self.stopping.is_set():
                    break
                logger.warning("event receiver failed; reconnecting", exc_info=True)
                self.stopping.wait(2.0)

    # -- sweeps ------------------------------------------------------------------------------
    def sweep_forever(self) -> None:
        while not self.stopping.wait(self.cfg["SWEEP_INTERVAL"]):
            self.sweep()
            close_old_connections()

    def sweep(self) -> dict[str, int]:
        """One round of sweeps (cmdb.jobs.sweeps); returns what each ended or moved."""
        now = self.clock()
        round_ = sweeps.Sweep(self.app, self.cfg, self.liveness, now, timezone.now(),
                              deaf=self.liveness.deaf(now))  # fmt: skip
        if round_.deaf:
            logger.warning("no worker events heard for %.0f s: liveness verdicts suspended",
                           now - (self.liveness.last_event or self.liveness.started))  # fmt: skip
        todo = list(sweeps.EVERY_SWEEP)
        if now - self.last_expiry >= self.EXPIRY_EVERY:
            self.last_expiry = now
            todo.append(sweeps.expired_fetches)
        counts = {}
        for sweep in todo:
            try:
                counts[sweep.__name__] = sweep(round_)
            except Exception:  # one failing sweep must not stop the others
                logger.exception("sweep %s failed", sweep.__name__)
        return counts

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self.listen, "cmdb-events"), (self.sweep_forever, "cmdb-sweeper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        for thread in self.threads:
            thread.join(timeout=5)


class MonitorStep(bootsteps.StartStopStep):
    """Runs the Monitor inside the central worker (set CMDB_MONITOR=0 to leave it out)."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        self.enabled = settings.CMDB["MONITOR"]
        self.monitor = None

    def start(self, worker):
        self.monitor = Monitor(worker.app, settings.CMDB)
        self.monitor.start()
        logger.info("fleet monitor started")
        # Later batches are signed here: say with which key, so that an operator can tell a
        # central worker that made a key of its own (no CMDB_SIGNING_KEY) from the web's.
        try:
            logger.info("signing later batches with %s (public key %s)", signer.key_path(),
                        signer.fingerprint())  # fmt: skip
        except signer.SigningKeyError as exc:
            logger.error("this central worker cannot sign later batches of deploys: %s", exc)

    def stop(self, worker):
        if self.monitor:
            self.monitor.stop()
