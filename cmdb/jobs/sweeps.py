"""The monitor's sweeps: each ends or moves on one kind of overdue work, and says how many.

Decision 4 of the design: every host task reaches a terminal state. A message nobody consumes
waits in Redis forever and Celery's ``expires`` is only checked by a worker that receives it, so
the server keeps its own deadlines here:

- pending past its reach deadline            -> unreachable
- running on an agent that stopped beating   -> lost (kill -9, power off, network gone)
- running on an agent that restarted         -> lost (same node name, new pid)
- running past timeout + grace with no word  -> lost (the backstop for everything else)
- storing past timeout + grace               -> lost (the server did not finish storing)

The central worker's monitor (cmdb.jobs.monitor) runs them in turn every SWEEP_INTERVAL.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from cmdb.files.fetched import remove_expired_fetches
from cmdb.files.pushed import release_finished_pushes
from cmdb.hosts.choices import AgentStatusChoices as Status
from cmdb.hosts.models import Host
from cmdb.jobs import batches, lifecycle
from cmdb.jobs.broker import mark_cancelled
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.exceptions import BrokerDown
from cmdb.jobs.models import HostTask

logger = logging.getLogger(__name__)

E_UNREACHABLE = "no agent picked it up within {reach} s: is the agent for {ip} running?"
E_LOST_OVERDUE = "no result {grace} s after its {timeout} s timeout"
E_NOT_STORED = ("the host sent its file, but the server did not finish storing it within "
                "{limit} s (did the central worker stop? the broker hands the storing back to "
                "one within an hour, and then this task ends ok)")  # fmt: skip

#: Slack past a reach deadline, for a "started" notice still queued behind results.
REACH_SLACK = 2.0
#: Seconds between writes of an online host's last_seen (status changes write at once).
LAST_SEEN_EVERY = 30.0


@dataclass(frozen=True)
class Sweep:
    """What one round of sweeps knows: its collaborators, and one "now" for all of them."""

    app: object
    cfg: dict
    liveness: object  # cmdb.jobs.monitor.Liveness
    now: float
    now_dt: datetime
    #: Nothing at all was heard lately: the silence of agents says nothing about them.
    deaf: bool


def unreachable(s: Sweep) -> int:
    overdue = dict(
        HostTask.objects.filter(
            state=State.PENDING, reach_deadline__lt=s.now_dt - timedelta(seconds=REACH_SLACK)
        ).values_list("pk", "job__reach_timeout")
    )
    if not overdue:
        return 0
    ended = lifecycle.conclude(overdue, State.UNREACHABLE,
                               lambda t: E_UNREACHABLE.format(reach=overdue[t.pk], ip=t.ip),
                               only_from={State.PENDING})  # fmt: skip
    # An agent that turns up late must not run what the server gave up on.
    mark_cancelled(s.app, ended)
    return len(ended)


def _past_deadline(s: Sweep, started_at, timeout: int) -> bool:
    grace = s.cfg["RESULT_GRACE"]
    return bool(started_at) and (s.now_dt - started_at).total_seconds() > timeout + grace


def lost(s: Sweep) -> int:
    running = HostTask.objects.filter(state=State.RUNNING).values_list(
        "pk", "ip", "agent", "agent_pid", "started_at", "job__timeout"
    )
    ended = 0
    for pk, ip, agent, pid, started_at, timeout in running:
        since = started_at.timestamp() if started_at else s.now
        reason = None if s.deaf else s.liveness.verdict(ip, agent, pid, since, s.now)
        if reason is None and _past_deadline(s, started_at, timeout):
            reason = E_LOST_OVERDUE.format(grace=s.cfg["RESULT_GRACE"], timeout=timeout)
        if reason:
            logger.warning("host task on %s lost: %s", ip, reason)
            ended += len(lifecycle.conclude([pk], State.LOST, reason, only_from={State.RUNNING}))
    return ended


def not_stored(s: Sweep) -> int:
    """Fetches whose file has arrived: their host's agent has done its part (its death or
    restart changes nothing now); the server's storing has the same deadline a command has."""
    storing = HostTask.objects.filter(state=State.STORING).values_list(
        "pk", "started_at", "job__timeout"
    )
    overdue = {pk: timeout for pk, started_at, timeout in storing
               if _past_deadline(s, started_at, timeout)}  # fmt: skip
    if not overdue:
        return 0
    limit = lambda t: E_NOT_STORED.format(limit=overdue[t.pk] + s.cfg["RESULT_GRACE"])  # noqa: E731
    return len(lifecycle.conclude(overdue, State.LOST, limit, only_from={State.STORING}))


def host_status(s: Sweep) -> int:
    """Hosts online or offline as their agents' heartbeats say; returns how many went offline."""
    if s.deaf:
        return 0
    online = s.liveness.online(s.now)
    hosts = Host.objects.filter(ip__in=online)
    hosts.exclude(agent_status=Status.ONLINE).update(agent_status=Status.ONLINE, last_seen=s.now_dt)
    hosts.filter(last_seen__lt=s.now_dt - timedelta(seconds=LAST_SEEN_EVERY)).update(
        last_seen=s.now_dt
    )
    if s.now - s.liveness.started <= s.liveness.lost_after:
        return 0  # not listening long enough to call anyone silent
    silent = Host.objects.filter(agent_status=Status.ONLINE).exclude(ip__in=online)
    return silent.filter(last_seen__lt=s.now_dt - timedelta(seconds=s.liveness.lost_after)).update(
        agent_status=Status.OFFLINE
    )


def next_batches(s: Sweep) -> int:
    sent = 0
    for job_id in batches.held_jobs():
        try:
            sent += batches.advance(job_id, s.app) == "sent"
        except BrokerDown:
            logger.warning("next batch of job %s not sent: broker unreachable", job_id)
    return sent


def pushed_blobs(s: Sweep) -> int:
    return release_finished_pushes(s.app, s.cfg["BLOB_RELEASE_AFTER"])


def expired_fetches(s: Sweep) -> int:
    return remove_expired_fetches(s.cfg["FETCH_DIR"], s.cfg["FETCH_KEEP_DAYS"], s.now_dt)


#: Run in this order every sweep: the end states first, then what follows from them.
EVERY_SWEEP = (unreachable, lost, not_stored, host_status, next_batches, pushed_blobs)
