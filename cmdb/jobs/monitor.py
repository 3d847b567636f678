"""The central worker's monitor: agent liveness from their signed heartbeats (workers.alive),
and the sweeps that end overdue host tasks (cmdb.jobs.sweeps) on a thread of its own."""

import logging
import math
import threading
import time
from dataclasses import dataclass, field

from celery import bootsteps
from celery.events.receiver import EventReceiver
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from cmdb.hosts.models import Host
from cmdb.jobs import signer, sweeps, trust
from wire import names, signing
from wire.messages import Heartbeat, WireError

logger = logging.getLogger(__name__)

#: The most hosts one agent's heartbeat may speak for (an agent serves one, or a few).
MAX_HOSTS_PER_AGENT = 64

E_LOST_SILENT = "agent {agent} stopped sending heartbeats {silence:.0f} s ago while it ran"
E_LOST_RESTARTED = "agent {agent} restarted (pid {old} -> {new}) while it ran"
E_LOST_OFFLINE = "agent {agent} shut down while it ran"
E_LOST_REPLACED = "agent {agent} is gone: {other} serves {ip} now"


@dataclass
class Sighting:
    """The newest signed heartbeat of a host's agent the monitor believed."""

    agent: str
    pid: int
    #: The agent's clock in it, and the monitor's when heard.
    at: float
    heard: float
    offline: bool = False
    #: Which agent process sent it, and its count there (only ever later ones are taken).
    boot: str = ""
    seq: int = 0


def _later(beat: Heartbeat, seen: Sighting) -> bool:
    """``beat`` comes after ``seen``: later in the same agent process by its count (whatever its
    clock did), or from another process and later by the host's clock."""
    if beat.boot and beat.boot == seen.boot:
        return beat.seq > seen.seq
    return beat.at > seen.at


@dataclass
class Liveness:
    """What signed heartbeats say about each host's agent, by IP. Pure: time is passed in."""

    lost_after: float
    started: float
    hosts: dict[str, Sighting] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: When any worker event (this central worker's own included) was last heard.
    last_event: float | None = None

    def event(self, now: float) -> None:
        self.last_event = now

    def listening(self, now: float) -> None:
        """The event connection is (again) up: heartbeats sent while it was down are gone, so
        no verdict until every live agent has had a full window to be heard."""
        with self.lock:
            self.started = now

    def heard(self, ip: str, beat: Heartbeat, now: float) -> bool:
        """Take a signed heartbeat for ``ip``; False (and nothing changes) unless it is newer
        than the last one taken and recent by the server's clock (give or take the clock slack
        signed messages have): one sent again later says nothing, nor one from the future."""
        slack = signing.CLOCK_SLACK
        if not now - self.lost_after - slack <= beat.at <= now + slack:
            return False
        with self.lock:
            seen = self.hosts.get(ip)
            if seen is not None and not _later(beat, seen):
                return False
            self.hosts[ip] = Sighting(beat.agent, beat.agent_pid, beat.at, now, beat.offline,
                                      beat.boot, beat.seq)  # fmt: skip
        return True

    def deaf(self, now: float) -> bool:
        """True when nothing at all was heard lately: our event connection is down, so the
        silence of agents says nothing about them."""
        last = self.last_event if self.last_event is not None else self.started
        return now - last > self.lost_after

    def online(self, now: float) -> set[str]:
        """The IPs whose agent was heard lately and has not shut down."""
        with self.lock:
            return {ip for ip, s in self.hosts.items()
                    if not s.offline and now - s.heard <= self.lost_after}  # fmt: skip

    def agent_of(self, ip: str) -> str:
        """The node name of ``ip``'s agent as last heard, or ""."""
        with self.lock:
            seen = self.hosts.get(ip)
        return seen.agent if seen else ""

    def verdict(self, ip: str, agent: str, pid: int | None, since: float, now: float) -> str | None:
        """Why a task that agent ``agent`` (main pid ``pid``) began on host ``ip`` at ``since``
        is lost, or None if it may live."""
        if now - self.started <= self.lost_after:
            # Not listening long enough: every live agent has not spoken yet, and an old
            # heartbeat sent again (before the agent's next, newer one) must not condemn a task.
            return None
        with self.lock:
            seen = self.hosts.get(ip)
        if seen is None:
            silence = now - max(self.started, since)
            if silence > self.lost_after:
                return E_LOST_SILENT.format(agent=agent, silence=silence)
            return None
        if seen.agent != agent and agent:
            return E_LOST_REPLACED.format(agent=agent, other=seen.agent, ip=ip)
        if pid and seen.pid != pid:
            return E_LOST_RESTARTED.format(agent=agent, old=pid, new=seen.pid)
        # The task's own start counts as a sign of life (its notice is signed): a heartbeat
        # from before it (the host was not accepted for a while, say) says nothing against it.
        if seen.offline and seen.heard >= since and now - seen.heard > min(5.0, self.lost_after):
            return E_LOST_OFFLINE.format(agent=agent)
        last = max(seen.heard, since)
        if now - last > self.lost_after:
            return E_LOST_SILENT.format(agent=agent, silence=now - last)
        return None


class SturdyReceiver(EventReceiver):
    """Celery's event receiver, but one bad event costs only itself: Celery's raises on an
    event it cannot read (a type that is a list, say), and the reconnect that follows would
    miss real heartbeats. Anyone on the broker can publish events."""

    def _receive(self, body, message, list=list, isinstance=isinstance):
        for event in body if isinstance(body, list) else [body]:
            try:
                self.process(*self.event_from_message(event))
            except Exception:
                logger.warning("unreadable worker event dropped", exc_info=logger.isEnabledFor(
                    logging.DEBUG))  # fmt: skip


class AcceptedKeys:
    """The accepted agents' keys by IP, read again every REFRESH seconds, and at once (at most
    once a second) for an IP it does not know: a host accepted a moment ago is heard."""

    REFRESH = 10.0

    def __init__(self, clock):
        self.clock = clock
        self.keys: dict[str, str] = {}
        self.loaded = -math.inf

    def _load(self) -> None:
        self.loaded = self.clock()
        self.keys = dict(Host.objects.speaking().exclude(agent_key="")
                         .values_list("ip", "agent_key"))  # fmt: skip

    def get(self, ip: str) -> str | None:
        age = self.clock() - self.loaded
        if age > self.REFRESH or (ip not in self.keys and age > 1.0):
            try:
                self._load()
            finally:
                close_old_connections()
        return self.keys.get(ip)


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
        self.keys = AcceptedKeys(clock)
        self.dropped = trust.Dropped()
        self.dropped_flushed = 0.0

    # -- events ------------------------------------------------------------------------------
    def on_event(self, event: dict) -> None:
        kind = event.get("type", "") if isinstance(event, dict) else ""
        if not isinstance(kind, str) or not kind.startswith("worker-"):
            return
        now = self.clock()
        self.liveness.event(now)
        try:
            if kind == names.HEARTBEAT_EVENT:
                self.on_heartbeat(event.get("heartbeat"), now)
            if now - self.dropped_flushed > 5.0:
                self.dropped_flushed = now
                self.dropped.flush(self.app)
        except Exception:  # the database away, say: one event, not the listener
            logger.exception("worker event not taken")

    def on_heartbeat(self, raw, now: float) -> None:
        """A signed heartbeat counts for each host it names whose accepted key signed it;
        Celery's own worker-heartbeat and worker-offline (unsigned) count for nothing."""
        try:
            beat = Heartbeat.from_wire(raw)
        except WireError:
            agent = raw.get("agent") if isinstance(raw, dict) else None
            return self.dropped.add(Heartbeat.WHAT, trust.R_MALFORMED, "?", agent)
        if len(beat.hosts) > MAX_HOSTS_PER_AGENT:
            return self.dropped.add(beat.WHAT, trust.R_MALFORMED, "many hosts", beat.agent)
        verified: dict[str, str | None] = {}  # one check per key, not per host
        for ip in beat.hosts:
            pem = self.keys.get(ip) if isinstance(ip, str) else None
            if pem is None:
                self.dropped.add(beat.WHAT, trust.R_NOT_ACCEPTED, ip, beat.agent, quiet=True)
                continue
            if pem not in verified:
                verified[pem] = trust.signed_by(Heartbeat, raw, pem)
            if verified[pem]:
                self.dropped.add(beat.WHAT, verified[pem], ip, beat.agent)
            elif not self.liveness.heard(ip, beat, now):
                self.dropped.add(beat.WHAT, trust.R_STALE, ip, beat.agent)

    def listen(self) -> None:
        handlers = {"*": self.on_event}
        while not self.stopping.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    self._receiver = SturdyReceiver(conn, handlers=handlers, app=self.app)
                    self.liveness.listening(self.clock())
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
            todo += [sweeps.expired_fetches, sweeps.expired_outputs]
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
