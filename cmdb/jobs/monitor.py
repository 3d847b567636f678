"""The central worker's monitor: agent liveness from heartbeats, and the end of overdue tasks.

Decision 4 of the design: every host task reaches a terminal state. A message nobody consumes
waits in Redis forever and Celery's ``expires`` is only checked by a worker that receives it, so
the server keeps its own deadlines here:

- pending past its reach deadline            -> unreachable
- running on an agent that stopped beating   -> lost (kill -9, power off, network gone)
- running on an agent that restarted         -> lost (same node name, new pid)
- running past timeout + grace with no word  -> lost (the backstop for everything else)
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from celery import bootsteps
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from cmdb.files.fetched import remove_expired_fetches
from cmdb.files.pushed import release_finished_pushes
from cmdb.hosts.choices import AgentStatusChoices as Status
from cmdb.hosts.models import Host
from cmdb.jobs import batches, results, signer
from cmdb.jobs.broker import mark_cancelled
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.dispatch import BrokerUnavailable
from cmdb.jobs.models import HostTask

logger = logging.getLogger(__name__)

E_UNREACHABLE = "no agent picked it up within {reach} s: is the agent for {ip} running?"
E_LOST_SILENT = "agent {agent} stopped sending heartbeats {silence:.0f} s ago while it ran"
E_LOST_RESTARTED = "agent {agent} restarted (pid {old} -> {new}) while it ran"
E_LOST_OFFLINE = "agent {agent} shut down while it ran"
E_LOST_OVERDUE = "no result {grace} s after its {timeout} s timeout"
E_NOT_STORED = ("the host sent its file, but the server did not finish storing it within "
                "{limit} s (did the central worker stop? the broker hands the storing back to "
                "one within an hour, and then this task ends ok)")  # fmt: skip


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

    #: Seconds between writes of an online host's last_seen (status changes write at once).
    LAST_SEEN_EVERY = 30.0
    #: Slack past a reach deadline, for a "started" notice still queued behind results.
    REACH_SLACK = 2.0
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
            try:
                self.sweep()
            except Exception:
                logger.exception("sweep failed")
            finally:
                close_old_connections()

    def sweep(self) -> dict:
        now, now_dt = self.clock(), timezone.now()
        counts = {"unreachable": 0, "lost": 0}
        overdue = HostTask.objects.filter(
            state=State.PENDING,
            reach_deadline__lt=now_dt - timedelta(seconds=self.REACH_SLACK),
        ).values_list("pk", "job__reach_timeout")
        overdue = dict(overdue)
        if overdue:
            ended = results.conclude(
                overdue,
                State.UNREACHABLE,
                lambda t: E_UNREACHABLE.format(reach=overdue[t.pk], ip=t.ip),
                only_from={State.PENDING},
            )
            counts["unreachable"] = len(ended)
            if ended:
                # An agent that turns up late must not run what the server gave up on.
                mark_cancelled(self.app, ended)
        running = HostTask.objects.filter(state=State.RUNNING).values_list(
            "pk", "agent", "agent_pid", "started_at", "job__timeout"
        )
        grace = self.cfg["RESULT_GRACE"]
        deaf = self.liveness.deaf(now)
        if deaf:
            logger.warning(
                "no worker events heard for %.0f s: liveness verdicts suspended",
                now - (self.liveness.last_event or self.liveness.started),
            )
        # Fetches whose file has arrived: their host's agent has done its part (its death or
        # restart now changes nothing), the server's storing has the same deadline.
        storing = set(running.filter(job__kind=JobKindChoices.FETCH,
                                     stdout_head__startswith=results.STORING)
                      .values_list("pk", flat=True))  # fmt: skip
        for pk, agent, pid, started_at, timeout in running:
            reason = None if deaf or pk in storing else self.liveness.verdict(agent, pid, now)
            if (
                reason is None
                and started_at
                and (now_dt - started_at).total_seconds() > (timeout + grace)
            ):
                reason = (E_NOT_STORED.format(limit=timeout + grace) if pk in storing
                          else E_LOST_OVERDUE.format(grace=grace, timeout=timeout))  # fmt: skip
            if reason:
                counts["lost"] += len(
                    results.conclude([pk], State.LOST, reason, only_from={State.RUNNING})
                )
        if not deaf:
            self.update_hosts(now, now_dt)
        self.advance_batches()
        release_finished_pushes(self.app, self.cfg["BLOB_RELEASE_AFTER"])
        if now - self.last_expiry >= self.EXPIRY_EVERY:
            self.last_expiry = now
            cfg = self.cfg
            remove_expired_fetches(cfg["FETCH_DIR"], cfg["FETCH_KEEP_DAYS"], now_dt)
        return counts

    def advance_batches(self) -> None:
        for job_id in batches.held_jobs():
            try:
                batches.advance(job_id, self.app)
            except BrokerUnavailable:
                logger.warning("next batch of job %s not sent: broker unreachable", job_id)

    def update_hosts(self, now: float, now_dt) -> None:
        online = self.liveness.online(now)
        hosts = Host.objects.filter(agent_name__in=online)
        hosts.exclude(agent_status=Status.ONLINE).update(
            agent_status=Status.ONLINE, last_seen=now_dt
        )
        hosts.filter(last_seen__lt=now_dt - timedelta(seconds=self.LAST_SEEN_EVERY)).update(
            last_seen=now_dt
        )
        if now - self.liveness.started > self.liveness.lost_after:
            Host.objects.filter(agent_status=Status.ONLINE).exclude(agent_name__in=online).filter(
                last_seen__lt=now_dt - timedelta(seconds=self.liveness.lost_after)
            ).update(agent_status=Status.OFFLINE)

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
