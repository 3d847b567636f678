"""The monitor's sweeps: each ends or moves on one kind of overdue work, and says how many.

Decision 4 of the design: every host task reaches a terminal state. A message nobody consumes
waits in Redis forever and Celery's ``expires`` is only checked by a worker that receives it, so
the server keeps its own deadlines here:

- pending past its reach deadline            -> unreachable, if the server takes its run-once
                                                claim (the fence; its message is taken out of
                                                the queue); else its agent's (below)
- pending, claimed by an agent that is gone  -> lost (took it, died before saying it started)
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
from cmdb.jobs import batches, kept, lifecycle
from cmdb.jobs.broker import (
    fence,
    held_by_agent,
    mark_cancelled,
    redis_client,
    release_for_resend,
    unqueue,
)
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.dispatch import resend
from cmdb.jobs.exceptions import BrokerDown
from cmdb.jobs.models import HostTask

logger = logging.getLogger(__name__)

E_UNREACHABLE = ("no agent took it within {reach} s: is the agent for {ip} running? It was taken "
                 "out of the queue and will never run")  # fmt: skip
E_UNREACHABLE_HELD = ("the agent for {ip} received it but had not started it within {reach} s; it "
                      "will not run now (the server holds its run-once claim)")  # fmt: skip
E_UNREACHABLE_UNSENT = ("{dispatch_error}; no agent took it within {reach} s, and it will never "
                        "run")  # fmt: skip
E_LOST_TAKEN = ("the agent took it (pid {pid}) but had not said it started when {why}; it may "
                "have run")  # fmt: skip
E_LOST_TAKEN_OVERDUE = ("the agent took it (pid {pid}) and has said nothing {grace} s past the "
                        "{timeout} s timeout; it may have run")  # fmt: skip
#: Said with every verdict on a running command: what the server cannot know yet.
E_LOST_HINT = "; the command may still be running there, until the agent restarts and kills it"
E_LOST_OVERDUE = "no result {grace} s after its {timeout} s timeout"
E_NOT_STORED = ("the host sent its file, but the server did not finish storing it within "
                "{limit} s (did the central worker stop? the broker hands the storing back to "
                "one within an hour, and then this task ends ok)")  # fmt: skip

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
    """Pending tasks past their reach deadline: unreachable only where the server takes their
    run-once claim (the fence: no agent starts them after that, workers.guard), and their
    message out of the host's queue where it still is. A task an agent claimed first is its
    agent's: it waits for its notice or result, or for that agent's death (then lost)."""
    overdue = list(
        HostTask.objects.filter(state=State.PENDING, reach_deadline__lt=s.now_dt).values_list(
            "pk", "task_id", "ip", "reach_deadline", "job__reach_timeout", "job__timeout",
            "job__dispatch_error",
        )
    )  # fmt: skip
    if not overdue:
        return 0
    holders = fence(s.app, [(row[1], row[2]) for row in overdue])
    fenced, taken = [], []
    for row in overdue:
        (taken if holders[row[1]] else fenced).append(row)
    # The fence is the proof; taking the messages out only tidies the queues and picks the
    # words. One host's queue (its agent may push anything onto it) must not hold up the rest.
    removed = set()
    by_ip: dict[str, set[str]] = {}
    for _, task_id, ip, *_ in fenced:
        by_ip.setdefault(ip, set()).add(task_id)
    with redis_client(s.app) as client:
        for ip, ids in by_ip.items():
            try:
                removed |= unqueue(client, ip, ids)
            except Exception:
                logger.warning("could not take messages out of %s's queue", ip, exc_info=True)
    resent = _resend_lost_messages(s, fenced, removed)
    fenced = [row for row in fenced if row[0] not in resent]
    reasons = {}
    for pk, task_id, ip, _, reach, _, dispatch_error in fenced:
        if dispatch_error:
            reasons[pk] = E_UNREACHABLE_UNSENT.format(dispatch_error=dispatch_error, reach=reach)
        elif task_id in removed:
            reasons[pk] = E_UNREACHABLE.format(reach=reach, ip=ip)
        else:
            reasons[pk] = E_UNREACHABLE_HELD.format(reach=reach, ip=ip)
    ended = lifecycle.conclude(reasons, State.UNREACHABLE, lambda t: reasons[t.pk],
                               only_from={State.PENDING})  # fmt: skip
    # Belt and braces: an agent checks the cancel mark before the claim.
    mark_cancelled(s.app, ended)
    return len(ended) + _taken_and_silent(s, taken, holders)


def _resend_lost_messages(s: Sweep, fenced: list, removed: set[str]) -> set[int]:
    """Send once more, with a new reach deadline, what a live agent's broker lost: a message
    that is neither in its host's queue nor among what its agent holds, and that no agent
    claimed. kombu's Redis transport pops a message before it records it as held; a broker
    killed in between (or restarted without its data) loses it while the agent is up. Sent
    again at most once; the pks resent (they stay pending)."""
    online = s.liveness.online(s.now) if not s.deaf else set()
    candidates = [row for row in fenced
                  if row[1] not in removed and not row[6] and row[2] in online]  # fmt: skip
    if not candidates:
        return set()
    resent: dict[int, tuple] = {}
    with redis_client(s.app) as client:
        by_ip: dict[str, set[str]] = {}
        for _, task_id, ip, *_ in candidates:
            by_ip.setdefault(ip, set()).add(task_id)
        held = set()
        for ip, ids in by_ip.items():
            held |= held_by_agent(client, ip, ids)
        for row in candidates:
            pk, task_id, ip, *_ = row
            if task_id not in held and release_for_resend(client, task_id, ip):
                resent[pk] = row
    if not resent:
        return set()
    tasks = list(HostTask.objects.select_related("job").filter(pk__in=resent))
    for task in tasks:
        task.reach_deadline = s.now_dt + timedelta(seconds=task.job.reach_timeout)
        HostTask.objects.filter(pk=task.pk, state=State.PENDING).update(
            reach_deadline=task.reach_deadline
        )
    by_job: dict = {}
    for task in tasks:
        by_job.setdefault(task.job_id, (task.job, []))[1].append(task)
    for job, job_tasks in by_job.values():
        try:
            resend(job, job_tasks, s.app)
            logger.warning("sent %d message(s) of job %s again: the broker lost them after "
                           "handing them to a live agent", len(job_tasks), job.pk)  # fmt: skip
        except Exception:
            # Their next deadline ends them (unreachable: they were resent once already).
            logger.exception("could not send job %s's lost messages again", job.pk)
    return set(resent)


def _pid(holder: str) -> int | None:
    """The pid an agent wrote as its claim's value; None for anything else (a host's agent
    may write what it likes under its own claims)."""
    if holder.isascii() and holder.isdigit() and len(holder) < 10:
        return int(holder)
    return None


def _taken_and_silent(s: Sweep, taken: list, holders: dict) -> int:
    """Tasks an agent claimed but never said it started: lost once that agent is found dead
    (or restarted), or past the timeout with no word."""
    ended = 0
    for pk, task_id, ip, deadline, _, timeout, _ in taken:
        holder = holders[task_id]
        pid = _pid(holder)
        holder = str(pid) if pid is not None else "unknown"
        why = None if s.deaf else s.liveness.verdict(ip, s.liveness.agent_of(ip), pid,
                                                     deadline.timestamp(), s.now)  # fmt: skip
        if why:
            reason = E_LOST_TAKEN.format(pid=holder, why=why)
        elif _past_deadline(s, deadline, timeout):
            reason = E_LOST_TAKEN_OVERDUE.format(pid=holder, grace=s.cfg["RESULT_GRACE"],
                                                 timeout=timeout)  # fmt: skip
        else:
            continue
        logger.warning("host task on %s lost: %s", ip, reason)
        ended += _conclude_one(pk, reason, State.PENDING)
    return ended


def _conclude_one(pk: int, reason: str, seen: str) -> int:
    """End one task lost; one that cannot be written must not keep the next from ending."""
    try:
        return len(lifecycle.conclude([pk], State.LOST, reason, only_from={seen}))
    except Exception:
        logger.exception("could not end host task %s lost", pk)
        return 0


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
            ended += _conclude_one(pk, reason + E_LOST_HINT, State.RUNNING)
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


def expired_outputs(s: Sweep) -> int:
    return kept.remove_expired(s.cfg["OUTPUT_KEEP_DAYS"], s.now_dt)


#: Run in this order every sweep: the end states first, then what follows from them.
EVERY_SWEEP = (unreachable, lost, not_stored, host_status, next_batches, pushed_blobs)
