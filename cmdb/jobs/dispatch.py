"""Dispatch: validate, record the job, publish one task per host after commit; and cancel.

Below the service layer (cmdb.jobs.services), which checks the signing key and uploads first.
Nothing here waits for a host. The only network call is publishing to the broker, and a broker
that is down becomes BrokerDown within seconds, with the job saying it was not sent.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from celery.utils.nodenames import anon_nodename
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cmdb import audit
from cmdb.access import grants
from cmdb.access.actor import Actor
from cmdb.assets.where import parse_all as parse_where
from cmdb.audit.choices import AuditActionChoices
from cmdb.hosts.choices import AgentStatusChoices, KeyStateChoices, ModeChoices
from cmdb.hosts.fields import ip_number
from cmdb.hosts.models import Host, HostGroup, TargetError
from cmdb.jobs import bulk, lifecycle, signer
from cmdb.jobs.broker import BROKER_ERRORS, fence, mark_cancelled
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.exceptions import BrokerDown, CannotSign, NeedsConfirmation, NotPermitted, Refused
from cmdb.jobs.models import HostTask, Job
from cmdb.jobs.rollout import Rollout, batch_of
from wire import names, signing
from wire.messages import CollectSpec, CommandSpec, FetchSpec, PushSpec, Spec
from wire.transport import redacted

logger = logging.getLogger(__name__)

E_EMPTY_COMMAND = "the command is empty"
E_NO_TARGETS = "no target hosts given (--hosts, --group, --where or --all)"
E_UNKNOWN_GROUP = "unknown group {name!r}"
E_NO_MATCH = "no host matches the targets given"
E_KEEP_TOO_MUCH = ("--keep-output: {hosts} hosts x 2 streams would leave each less than "
                   "{floor:,} bytes of CMDB_KEEP_OUTPUT_JOB_BYTES ({most:,} bytes, what one job "
                   "may keep on the server); target fewer hosts")  # fmt: skip
#: Below this share of the job's budget per stream, keeping the whole output keeps too little
#: to be worth it: the job is refused rather than kept in shreds.
KEEP_FLOOR = 1 << 20
E_NONE_ONLINE = "no target's agent is online now (--online-only)"
E_NOT_ACCEPTED = {
    "none": "host {ip} has no agent key yet (no agent has registered): it receives nothing",
    "pending": "host {ip}'s agent key is pending: `manage.py keys accept {ip}` first",
    "rejected": "host {ip}'s agent key was rejected: it receives nothing",
}
E_CONFIRM = (
    "this job would reach {count} hosts, more than the {ceiling} allowed without confirming "
    "({source}): check the targets, then confirm with --yes (command line) or "
    '"confirm": true (API)'
)
E_CEILING_SETTING = "CMDB_CONFIRM_ABOVE"
E_CEILING_GRANT = "the host ceiling of grant {pk}"
E_SALT_FILES = "{kind} is not supported in salt mode: {hosts}"
E_TIMEOUT_RANGE = "timeout must be between 1 and {max} seconds, not {value}"
E_REACH_RANGE = "reach timeout must be between 1 and {max} seconds, not {value}"

#: Below Redis' visibility_timeout (1 h): a message an agent reserved but had not started by
#: then would be handed out again (the agent's run-once claim would refuse it, but the first
#: copy should simply never wait that long). Also the longest a signed message is valid, so it
#: must stay within wire.signing.MAX_VALIDITY (agents refuse deadlines further off).
MAX_REACH_TIMEOUT = 3000
E_BROKER_DOWN = "broker unreachable at {url}: {exc} (the job was recorded but not dispatched)"
E_NOT_DISPATCHED = "not dispatched: {reason}"
E_PARTIAL = (
    "sent to {sent} of {total} hosts, {maybe} more possibly sent (they end by their reach "
    "deadline); then {reason}"
)
E_CANCELLED_PENDING = "cancelled before any agent started it"
E_CANCELLED_STORING = "cancelled while the server was storing its file"

# Publishing retries briefly: a broker that refuses connections is reported in about a second,
# one that black-holes them or answers nothing after CMDB_BROKER_TIMEOUT per attempt; and all of
# it within one deadline (CMDB_DISPATCH_TIMEOUT), however many attempts that leaves.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class DispatchDeadline(OSError):
    """Publishing has taken the whole dispatch deadline: the broker counts as down."""


def _retry_policy(app: Celery) -> dict:
    """kombu's retry policy for one publishing, within CMDB_DISPATCH_TIMEOUT from now."""
    deadline = time.monotonic() + settings.CMDB["DISPATCH_TIMEOUT"]
    attempt = app.conf.broker_transport_options.get("socket_timeout") or 0
    return {**RETRY_POLICY, "errback": _within(deadline, attempt)}


def _within(deadline: float, attempt: float):
    """kombu's errback before each retry: no retry that could not end (``attempt`` seconds,
    the broker timeout, after its pause) before the deadline."""

    def errback(exc, interval):
        if time.monotonic() + interval + attempt > deadline:
            raise DispatchDeadline(f"{exc} (and no answer within the dispatch deadline)") from exc

    return errback


#: Slack on Celery's ``expires``, as agents give the signed deadline (wire.signing): a host whose
#: clock runs ahead must not drop messages the server still waits for. The server's fence at the
#: reach deadline (cmdb.jobs.broker.fence) is what decides.
EXPIRES_SLACK = timedelta(seconds=signing.DEADLINE_SLACK)

#: Messages per pipelined flush. When a flush fails its whole chunk and the rest are marked
#: not dispatched (a connection that dies mid-pipeline may have delivered part of that chunk).
BATCH_SIZE = 500


class Problems(dict):
    """field -> messages, in the order found."""

    def add(self, field_name: str, *messages: str) -> None:
        if messages:
            self.setdefault(field_name, []).extend(messages)


@dataclass(frozen=True)
class CommandRequest:
    """What to run where. Targets are the union of ``targets`` (IPs or hostnames) and the
    members of ``groups``, filtered by every ``where`` expression; with only ``where``, all
    hosts are filtered."""

    command: str = ""
    targets: list[str] = field(default_factory=list)
    timeout: int | None = None
    reach_timeout: int | None = None
    requested_by: str = ""
    kind: str = JobKindChoices.COMMAND
    groups: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    #: Kind-specific: "agent" (what the agent task gets), "to" ...
    params: dict = field(default_factory=dict)
    #: Who asks (cmdb.access.actor.Actor): a user's request reaches only the hosts their grants
    #: allow; None, or an actor without a user, is the server's own (a schedule, a key accepted).
    actor: object | None = None
    #: A canary, batches and a failure limit, as given (cmdb.jobs.rollout); the job's params
    #: get them resolved.
    rollout: Rollout = field(default_factory=Rollout)
    #: The requester confirmed reaching more hosts than their ceiling (_check_reach).
    confirm: bool = False
    #: Every host the requester may act on (accepted), besides any other target.
    all_hosts: bool = False
    #: Leave out the targets whose agent is not online now (they are named in the job's
    #: params, "skipped_offline"), rather than wait their reach timeout out.
    online_only: bool = False


def _every_host(request: CommandRequest) -> dict[int, Host]:
    """--all: the accepted hosts the requester may act on for the request's kind."""
    hosts = Host.objects.filter(key_state=KeyStateChoices.ACCEPTED)
    user = getattr(request.actor, "user", None)
    if user is not None:
        hosts = grants.hosts_for(user, grants.ACTION_OF_KIND[request.kind], hosts)
    return {h.pk: h for h in hosts}


def online_split(hosts: list[Host]) -> tuple[list[Host], list[Host]]:
    """(those whose agent is online now, the others: offline, or never seen)."""
    online = [h for h in hosts if h.agent_status == AgentStatusChoices.ONLINE]
    return online, [h for h in hosts if h.agent_status != AgentStatusChoices.ONLINE]


def keep_share(hosts: int) -> int:
    """Bytes of each stream a host may keep when ``hosts`` keep their output in one job."""
    return settings.CMDB["KEEP_OUTPUT_JOB_BYTES"] // (2 * max(hosts, 1))


def _select_hosts(request: CommandRequest, problems: Problems) -> list[Host]:
    if not (request.targets or request.groups or request.where or request.all_hosts):
        problems.add("targets", E_NO_TARGETS)
        return []
    hosts: dict[int, Host] = _every_host(request) if request.all_hosts else {}
    if request.targets:
        try:
            hosts.update((h.pk, h) for h in Host.objects.resolve(request.targets))
        except TargetError as exc:
            problems.add("targets", *exc.problems)
    if request.groups:
        groups = {g.name: g for g in HostGroup.objects.filter(name__in=request.groups)}
        unknown = [E_UNKNOWN_GROUP.format(name=n) for n in request.groups if n not in groups]
        problems.add("groups", *unknown)
        for host in Host.objects.filter(groups__in=groups.values()):
            hosts.setdefault(host.pk, host)
    q, where_problems = parse_where(request.where)
    problems.add("where", *where_problems)
    if problems:
        return []
    if request.where:
        base = Host.objects.all()
        if request.targets or request.groups or request.all_hosts:
            base = base.filter(pk__in=hosts)
        hosts = {h.pk: h for h in base.filter(q).distinct()}
    if not hosts:
        problems.add("targets", E_NO_MATCH)
    # Only an accepted agent receives anything: refused by name, before anything is recorded.
    problems.add("targets", *(E_NOT_ACCEPTED[h.key_state].format(ip=h.ip)
                              for h in sorted(hosts.values(), key=lambda h: ip_number(h.ip))
                              if h.key_state != KeyStateChoices.ACCEPTED))  # fmt: skip
    # By address as numbers (127.0.2.9 before 127.0.2.10): a canary is the first N so.
    return sorted(hosts.values(), key=lambda h: ip_number(h.ip))


def _validate(request: CommandRequest) -> tuple[list[Host], int, int, list[Host]]:
    """(the hosts, the timeout, the reach timeout, the targets left out as not online)."""
    cfg = settings.CMDB
    problems = Problems()
    if request.kind == JobKindChoices.COMMAND and not (request.command or "").strip():
        problems.add("command", E_EMPTY_COMMAND)
    timeout = cfg["DEFAULT_TIMEOUT"] if request.timeout is None else request.timeout
    if not 1 <= timeout <= cfg["MAX_TIMEOUT"]:
        problems.add("timeout", E_TIMEOUT_RANGE.format(max=cfg["MAX_TIMEOUT"], value=timeout))
    reach = cfg["REACH_TIMEOUT"] if request.reach_timeout is None else request.reach_timeout
    if not 1 <= reach <= MAX_REACH_TIMEOUT:
        problems.add("reach_timeout", E_REACH_RANGE.format(max=MAX_REACH_TIMEOUT, value=reach))
    for name, message in request.rollout.problems():
        problems.add(name, message)
    hosts, skipped = _select_hosts(request, problems), []
    if not problems and request.online_only:
        hosts, skipped = online_split(hosts)
        if not hosts:
            problems.add("targets", E_NONE_ONLINE)
    if request.kind in (JobKindChoices.PUSH, JobKindChoices.FETCH):
        # The salt gateway would only refuse each task: say so now, with nothing recorded.
        salt = [f"{h.ip} (minion {h.salt_minion})" for h in hosts if h.mode == ModeChoices.SALT]
        if salt:
            problems.add("targets", E_SALT_FILES.format(kind=request.kind, hosts=", ".join(salt)))
    if request.params.get("keep_output") and not problems and keep_share(len(hosts)) < KEEP_FLOOR:
        problems.add("keep_output", E_KEEP_TOO_MUCH.format(
            hosts=len(hosts), floor=KEEP_FLOOR, most=cfg["KEEP_OUTPUT_JOB_BYTES"]))  # fmt: skip
    if problems:
        raise Refused(problems)
    user = getattr(request.actor, "user", None)
    if user is not None:
        # The kind at all, then every target, before anything is recorded: refused by name,
        # nothing dispatched.
        problems.add("kind", *grants.kind_refusal(user, request.kind))
        problems.add("targets", *grants.refusals(user, grants.ACTION_OF_KIND[request.kind], hosts))
        if problems:
            raise NotPermitted(problems)
    # Last: a confirmation is asked for only of a request that is right otherwise.
    _check_reach(request, hosts)
    return hosts, timeout, reach, skipped


#: The server's own doing: nobody is there to confirm, and nothing was typed that could be
#: mistyped (the scheduled collection of every host must go on whatever the fleet's size).
UNCONFIRMED_VIA = ("schedule", "system")


def _check_reach(request: CommandRequest, hosts: list[Host]) -> None:
    """NeedsConfirmation unless the request reaches at most its requester's ceiling of hosts,
    or says it confirms (--yes, "confirm": true, the admin's box).

    The ceiling: for a user, the strictest of their grants covering the targets
    (cmdb.access.grants.ceiling), else CMDB_CONFIRM_ABOVE; for a superuser and for the CLI
    acting as the server, CMDB_CONFIRM_ABOVE (a guard against mistakes, not a permission:
    a superuser's typo reaches as far). The server's own requests (a schedule, a key accepted,
    an agent's start) need none.
    """
    actor = _actor(request)
    if request.confirm or (actor.user is None and actor.via in UNCONFIRMED_VIA):
        return
    default = settings.CMDB["CONFIRM_ABOVE"]
    ceiling, grant = grants.ceiling(actor.user, grants.ACTION_OF_KIND[request.kind], hosts,
                                    default)  # fmt: skip
    if len(hosts) > ceiling:
        source = E_CEILING_SETTING if grant is None else E_CEILING_GRANT.format(pk=grant.pk)
        message = E_CONFIRM.format(count=len(hosts), ceiling=ceiling, source=source)
        raise NeedsConfirmation(message, count=len(hosts), ceiling=ceiling)


def _actor(request: CommandRequest) -> Actor:
    """Who asks: the request's Actor, else the server's own doing (a schedule, the CLI)."""
    if request.actor is not None:
        return request.actor
    by = request.requested_by or ""
    return Actor.system("cli" if by.startswith("cli:") else "schedule" if by == "schedule"
                        else "system")  # fmt: skip


def _given(request: CommandRequest) -> dict:
    return {"hosts": list(request.targets), "groups": list(request.groups),
            "where": list(request.where)}  # fmt: skip


def record_refusal(request: CommandRequest, problems: list[str]) -> None:
    """The refused request in the audit trail: call it outside any transaction, so that it is
    recorded though nothing else is."""
    audit.record(_actor(request), AuditActionChoices.REFUSED, kind=request.kind,
                 command=request.command, targets_given=_given(request),
                 detail={"reason": problems})  # fmt: skip


def check_request(request: CommandRequest) -> None:
    """Raise the Refused dispatch_command would, recording nothing: for a caller with costly
    work to do first (a push uploads its file; not for hosts that do not exist)."""
    _validate(request)


def check_key() -> None:
    """CannotSign unless this server can sign what agents run: said before a job is recorded
    that no agent would run (or a file uploaded for one)."""
    try:
        signer.private_key()
    except signer.SigningKeyError as exc:
        raise CannotSign(str(exc)) from None


def dispatch_command(request: CommandRequest, app: Celery) -> Job:
    """Record a command job for the targets and publish it; return the job at once.

    Must not be called inside a transaction (durable=True refuses): publishing waits for the
    rows to be committed, and the caller must see BrokerDown itself, not have it raised later
    from some outer commit.
    """
    actor = _actor(request)
    try:
        hosts, timeout, reach, skipped = _validate(request)
    except Refused as exc:
        record_refusal(request, exc.problems)
        raise
    check_key()
    now = timezone.now()
    # Rolling, later batches wait unpublished (no reach deadline yet); the central worker
    # sends each when the one before it has ended (cmdb.jobs.batches).
    params = {**request.params, **request.rollout.params(len(hosts))}
    if params.get("keep_output"):
        # Each host may send its stdout and its stderr whole, all to the server's disk: within
        # the job's budget, a wide job keeps less of each (the first bytes; the tail is in the
        # database as always).
        params["keep_output"] = min(int(params["keep_output"]), keep_share(len(hosts)))
    if skipped:  # --online-only: named for who reads the job
        params["skipped_offline"] = [h.ip for h in skipped]
    numbers = [batch_of(params, i, len(hosts)) for i in range(len(hosts))]
    with transaction.atomic(durable=True):
        job = Job.objects.create(
            kind=request.kind,
            command=request.command if request.kind == JobKindChoices.COMMAND else request.kind,
            timeout=timeout,
            reach_timeout=reach,
            requested_by=request.requested_by,
            created=now,
            params=params,
        )
        tasks = [
            HostTask(
                job=job,
                host=host,
                ip=host.ip,
                task_id=str(uuid.uuid4()),
                batch=numbers[i],
                reach_deadline=now + timedelta(seconds=reach) if numbers[i] == 0 else None,
            )
            for i, host in enumerate(hosts)
        ]
        # One prepared INSERT (bulk_create compiled every value: 3 s at 10,000 hosts).
        bulk.insert_many(HostTask, tasks)
        pks = dict(HostTask.objects.filter(job=job).values_list("task_id", "pk"))
        for task in tasks:
            task.pk = pks[task.task_id]
            task._state.adding, task._state.db = False, job._state.db
        # In the job's own transaction: no dispatch without its entry, and the other way.
        audit.record(actor, AuditActionChoices.DISPATCH, kind=request.kind, command=job.command,
                     targets_given=_given(request), targets_resolved=[h.ip for h in hosts],
                     job=job)  # fmt: skip
    # Publish only once the rows are committed: a fast agent's result must find them.
    publish(job, [t for t in tasks if t.batch == 0], app)
    return job


def _spec(job: Job, task: HostTask, reply_queue: str) -> Spec:
    """What the host's agent is told to do for this host task (wire.messages)."""
    cfg = settings.CMDB
    common = {"job": str(job.pk), "host": task.ip, "timeout": job.timeout,
              "reply_queue": reply_queue}  # fmt: skip
    if job.kind == JobKindChoices.COLLECT:
        return CollectSpec(**common, plugins=cfg["COLLECTORS"])
    if job.kind == JobKindChoices.PUSH:
        return PushSpec(**common, **job.params["agent"])
    if job.kind == JobKindChoices.FETCH:
        return FetchSpec(**common, **job.params["agent"], max_bytes=cfg["MAX_FETCH_BYTES"])
    return CommandSpec(
        **common,
        command=job.command,
        head_bytes=cfg["HEAD_BYTES"],
        tail_bytes=cfg["TAIL_BYTES"],
        max_output_bytes=cfg["MAX_OUTPUT_BYTES"],
        keep_output_bytes=int(job.params.get("keep_output") or 0),
    )


#: Who published, in every message's headers (Celery works it out per message otherwise).
_ORIGIN = anon_nodename()


def _send(app: Celery, producer, job: Job, task: HostTask, reply_queue: str, store,
          retry_policy: dict) -> None:  # fmt: skip
    """Publish one host task's message: Celery's task protocol (amqp.as_task_v2, what
    send_task builds) on kombu's producer, without send_task's routing and option merging,
    which cost more per message than everything else the dispatch does."""
    spec = _spec(job, task, reply_queue)
    name, raw = spec.TASK, spec.to_wire()
    expires = task.reach_deadline + EXPIRES_SLACK
    headers, properties, body, _ = app.amqp.as_task_v2(
        task.task_id,
        name,
        args=[raw],
        kwargs={},
        expires=expires,
        callbacks=[store],
        # Backstops behind the runner's own timeout: soft lets it kill the process group,
        # hard kills a stuck pool child.
        time_limit=job.timeout + 60,
        soft_time_limit=job.timeout + 30,
        # What `celery events` and logs show; Celery's safe repr of every host's spec was a
        # tenth of the dispatch time.
        argsrepr=f"[job {job.pk} on {task.ip}]",
        kwargsrepr="{}",
        origin=_ORIGIN,
        # As send_task has them: agents keep no results, the link callback carries them.
        reply_to=app.thread_oid,
        ignore_result=None,
    )
    # The agent runs it only if this verifies for its own queue, this id and this spec, and
    # only until the reach deadline (plus clock slack): wire/signing.py.
    headers.update(signer.auth_header(name, task.ip, task.task_id, task.reach_deadline, raw))
    producer.publish(
        body,
        # The anonymous exchange, as Celery routes to a queue of its own name: the list named
        # after the host's IP. Nothing to declare: declaring each host's queue cost two round
        # trips per host and per process (kombu caches it per connection), 13 of the 25 s of
        # a first dispatch to 10,000 hosts.
        exchange="",
        routing_key=task.ip,
        declare=[],
        serializer="json",
        headers=headers,
        delivery_mode=2,
        expiration=max(0.0, (expires - timezone.now()).total_seconds()),
        retry=True,
        retry_policy=retry_policy,
        **properties,
    )


def publish(job: Job, tasks: list[HostTask], app: Celery) -> None:
    """Send one message per host task to its host's queue, over one broker connection.

    A broker that cannot be reached before anything is sent fails the whole job as not
    dispatched. A failure mid-way leaves the chunk whose delivery is uncertain pending (its
    reach deadline settles it: a real result if it arrived, else unreachable) and marks the
    chunks never sent, so nothing tempts the operator into running a command twice.
    """
    reply_queue = settings.CMDB["RESULTS_QUEUE"]
    store = app.signature(names.STORE_RESULT, options={"queue": reply_queue})
    sent = uncertain = 0
    policy = _retry_policy(app)
    try:
        with app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(**policy)
            # One pipelined round trip per chunk (kombu's Producer.batch), not one per host.
            for start in range(0, len(tasks), BATCH_SIZE):
                chunk = tasks[start : start + BATCH_SIZE]
                uncertain = len(chunk)
                with producer.batch(max_size=len(chunk)):
                    for task in chunk:
                        _send(app, producer, job, task, reply_queue, store, policy)
                sent, uncertain = sent + len(chunk), 0
    except BROKER_ERRORS as exc:
        reason = E_BROKER_DOWN.format(url=redacted(app.conf.broker_url), exc=exc)
        if sent or uncertain:
            reason = E_PARTIAL.format(sent=sent, total=len(tasks), reason=reason, maybe=uncertain)
        never_sent = [t.pk for t in tasks[sent + uncertain :]]
        # Later batches must not go out by themselves once the broker is back: the operator
        # was told this job was not (fully) dispatched.
        never_sent += list(
            HostTask.objects.filter(
                job=job, state=State.PENDING, reach_deadline__isnull=True
            ).values_list("pk", flat=True)
        )
        with transaction.atomic():
            Job.objects.filter(pk=job.pk).update(
                dispatch_error=reason, dispatched_at=timezone.now()
            )
            lifecycle.conclude(never_sent, State.ERROR, E_NOT_DISPATCHED.format(reason=reason),
                               only_from={State.PENDING})  # fmt: skip
        job.dispatch_error = reason
        raise BrokerDown(reason, job) from exc
    job.dispatched_at = timezone.now()
    Job.objects.filter(pk=job.pk).update(dispatched_at=job.dispatched_at)


def resend(job: Job, tasks: list[HostTask], app: Celery) -> None:
    """Publish the messages of ``tasks`` once more (their reach deadlines already moved on):
    for messages the broker lost after handing them over (cmdb.jobs.sweeps). Safe whatever
    became of the first copy: the run-once claims let only one of the two run. BROKER_ERRORS
    propagate; nothing is marked here."""
    reply_queue = settings.CMDB["RESULTS_QUEUE"]
    store = app.signature(names.STORE_RESULT, options={"queue": reply_queue})
    policy = _retry_policy(app)
    with app.producer_or_acquire() as producer:
        for task in tasks:
            _send(app, producer, job, task, reply_queue, store, policy)


def cancel(tasks: list[HostTask], app: Celery, actor: Actor | None = None) -> int:
    """Cancel the tasks that have not finished; return how many were asked to stop.

    A pending task ends cancelled at once if the server gets its run-once claim (no agent
    will start it then); one an agent has claimed is being started, and is stopped like a
    running one: its agent's runner polls the mark, kills the command's process group and
    reports the end. A fetch the server is storing ends cancelled at once.
    """
    active = [t for t in tasks if t.state in State.active()]
    if not active:
        return 0
    audit.record(actor, AuditActionChoices.CANCEL, job=active[0].job_id,
                 targets_resolved=[t.ip for t in active])  # fmt: skip
    # Agents refuse a marked task before they run it and stop it while it runs (they obey no
    # remote control, so a revoke broadcast would reach nobody).
    mark_cancelled(app, [t.task_id for t in active])
    published = [t for t in active if t.state == State.PENDING and t.reach_deadline is not None]
    holders = fence(app, [(t.task_id, t.ip) for t in published])
    # No agent has anything of these to stop: they end now.
    now = [t.pk for t in active if t.state == State.STORING
           or (t.state == State.PENDING and holders.get(t.task_id) is None)]  # fmt: skip
    why = {State.PENDING: E_CANCELLED_PENDING, State.STORING: E_CANCELLED_STORING}
    lifecycle.conclude(now, State.CANCELLED, lambda t: why.get(t.state, ""),
                       only_from=set(why))  # fmt: skip
    return len(active)
