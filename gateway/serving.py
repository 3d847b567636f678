"""What every gateway worker shares, whatever reaches its hosts (SSH: gateway.worker; Salt:
gateway.salt): an agent for the hosts of one mode, read from the inventory, with the agents'
checks (workers.guard), the gateway's key for what it signs, signed heartbeats 64 hosts a
message, and the queues of hosts added in its mode picked up while it runs (NewHosts).
"""

import itertools
import logging
import threading
import time
import traceback

import redis
from celery import Celery, bootsteps
from celery.app import trace
from celery.worker import control as panel
from django.conf import settings
from django.db import close_old_connections

from cmdb.hosts import ssh as keys
from cmdb.hosts.models import Host
from cmdb.jobs import signer
from wire import control, names
from wire.messages import Heartbeat, Outcome, Report
from workers import claims, guard
from workers.agent import Agent
from workers.alive import SignedHeartbeat
from workers.config import AgentSettings

logger = logging.getLogger(__name__)

E_INTERNAL = "gateway error: {exc!r}"
#: A heartbeat speaks for at most this many hosts (cmdb.jobs.monitor.MAX_HOSTS_PER_AGENT).
BEAT_HOSTS = 64
#: Seconds between looks for hosts added in the gateway's mode since it started.
REFRESH_EVERY = 5.0
#: A placeholder queue when there is no host of its mode yet (a worker needs one).
IDLE_QUEUE = "cmdb.gateway.idle"


def gateway_settings(concurrency: int, state: str) -> AgentSettings:
    c = settings.CMDB
    return AgentSettings(
        redis_url=settings.BROKER_URL, central_queue=c["CENTRAL_QUEUE"],
        results_queue=c["RESULTS_QUEUE"], broker_timeout=4.0, pubkey=None, ip=None,
        concurrency=concurrency, loglevel="info", state_dir=settings.RUN_DIR / state,
        root=None, spool_dir=None, heartbeat=2.0,
        broker_master_name=settings.BROKER_MASTER_NAME,
    )  # fmt: skip


def gateway_app(name: str, settings_: AgentSettings) -> Celery:
    app = Celery(name, fixups=[])
    app.config_from_object(settings_.celery_config())
    app.conf.update(result_backend=None, task_ignore_result=True, worker_send_task_events=False,
                    worker_disable_rate_limits=True, worker_prefetch_multiplier=4,
                    task_publish_retry_policy={"max_retries": 40, "interval_start": 0,
                                               "interval_step": 1, "interval_max": 5})  # fmt: skip
    return app


class Gateway(Agent):
    """An agent for many hosts, those of one mode: the server's key checked as an agent checks
    it, the gateway's own key for what it signs (the key `hosts add` accepts for each of its
    hosts), a thread-safe Redis client (many tasks at once)."""

    #: The mode (cmdb.hosts.choices.ModeChoices) of the hosts it serves.
    mode = ""
    #: How the log says a host is served ("now serving 10.0.8.5 over SSH").
    over = ""

    def __init__(self, app, settings_: AgentSettings):
        super().__init__(app, settings_)
        self._redis = None
        self._lock = threading.Lock()

    def server_key(self):
        if self._public_key is None:
            self._public_key = signer.private_key().public_key()
        return self._public_key

    def own_key(self):
        if self._own_key is None:
            self._own_key = keys.gateway_key()
        return self._own_key

    def redis(self):
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(self.settings.redis_url,
                                                   socket_timeout=10)  # fmt: skip
            return self._redis

    def hosts(self) -> list[str]:
        """Every host in the inventory in this gateway's mode, now."""
        close_old_connections()
        return list(Host.objects.filter(mode=self.mode).values_list("ip", flat=True))

    def started(self, sender) -> None:
        """In worker_init: its identity is the queues it starts on; remote control obeys
        only what is harmless, as an agent's."""
        queues = sender.app.amqp.queues.consume_from or {}
        self.started_worker([q for q in queues if q != IDLE_QUEUE])
        control.obey_only_harmless(panel.Panel.data, logger)
        trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
        self.settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.server_key()
        self.own_key()

    def argv(self, loglevel: str, node: str) -> list[str]:
        """The worker's command line: the queues of its hosts now, a pool of threads."""
        return ["worker", "--queues", ",".join(self.hosts()) or IDLE_QUEUE, "--hostname", node,
                "--pool", "threads", "--concurrency", str(self.settings.concurrency),
                "--loglevel", loglevel, "--without-gossip", "--without-mingle",
                "--without-heartbeat"]  # fmt: skip


class GatewayHeartbeat(SignedHeartbeat):
    """The agents' signed heartbeat, for every host the gateway serves, 64 hosts a message."""

    boot = SignedHeartbeat.boot
    counter = itertools.count(1)

    def send(self, c, offline: bool = False) -> None:
        dispatcher = self.dispatcher
        hosts = sorted(self.agent.identity)
        if dispatcher is None or not hosts:
            return
        for i in range(0, len(hosts), BEAT_HOSTS):
            beat = Heartbeat(hosts=hosts[i : i + BEAT_HOSTS], agent=c.hostname,
                             agent_pid=self.agent.pid, at=time.time(), boot=self.boot,
                             seq=next(self.counter), offline=offline)  # fmt: skip
            try:
                dispatcher.send(names.HEARTBEAT_EVENT, retry=not offline,
                                heartbeat=beat.signed(self.agent.own_key()).to_wire())  # fmt: skip
            except Exception:
                logger.warning("could not send a heartbeat", exc_info=True)
                return


class NewHosts(bootsteps.StartStopStep):
    """Consume the queue of each host added in the gateway's mode since it started, and stop
    consuming those that left it."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    gateway: Gateway = None  # set by serve()

    def __init__(self, c, **kwargs):
        self.tref = None
        super().__init__(c, **kwargs)

    def start(self, c):
        self.tref = c.timer.call_repeatedly(REFRESH_EVERY, self.refresh, (c,))

    def stop(self, c):
        if self.tref is not None:
            c.timer.cancel(self.tref)
            self.tref = None

    def refresh(self, c) -> None:
        gw = self.gateway
        try:
            now = set(gw.hosts())
        except Exception:
            logger.warning("could not look for new %s-mode hosts", gw.mode, exc_info=True)
            return
        for ip in sorted(now - gw.identity):
            # Only the inventory widens what the gateway answers for (guard checks identity).
            gw.identity = gw.identity | {ip}
            c.add_task_queue(ip)
            logger.info("now serving %s %s", ip, gw.over)
        for ip in sorted(gw.identity - now):
            # Removed, or reached another way now: its queue is its agent's (or another
            # gateway's) again, and a message still taken from it is refused unsigned.
            gw.identity = gw.identity - {ip}
            c.cancel_task_queue(ip)
            logger.info("no longer serving %s %s", ip, gw.over)


def serve(app: Celery, gw: Gateway) -> None:
    """Add the gateway's consumer steps to its app: heartbeats and new hosts."""
    attrs = {"agent": gw}
    app.steps["consumer"].add(type("GatewayHeartbeat", (GatewayHeartbeat,), attrs))
    app.steps["consumer"].add(type("NewHosts", (NewHosts,), {"gateway": gw}))


def host_task(gw: Gateway, task, spec, body, announce_late: bool = False) -> dict:
    """As workers.tasks._host_task: whatever happens, a report for the server."""
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    sender = {"task_id": task.request.id, "host": queue, "agent": task.request.hostname or ""}
    try:
        report = guard.guarded(gw, task, spec, queue, body, claims.KEEP, announce_late)
    except guard.Unauthentic as refused:
        return refused.report.with_sender(**sender, agent_pid=gw.pid).to_wire()
    except Exception as exc:
        logger.exception("%s %s failed inside the gateway", task.name, task.request.id)
        report = Report.refusal(Outcome.ERROR, E_INTERNAL.format(exc=exc),
                                traceback=traceback.format_exc(limit=20))  # fmt: skip
    signed = report.with_sender(**sender, agent_pid=gw.pid).signed(gw.own_key())
    return signed.to_wire()
