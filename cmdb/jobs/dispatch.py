"""Dispatch: validate, record the job, publish one task per host after commit; and cancel.

Nothing here waits for a host. The only network call is publishing to the broker, and a broker
that is down becomes BrokerUnavailable within seconds, with the job saying it was not sent.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

import redis
from celery import Celery
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from cmdb.hosts.models import Host, TargetError
from cmdb.jobs import results
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import HostTask, Job
from workers import config

logger = logging.getLogger(__name__)

E_EMPTY_COMMAND = "the command is empty"
E_NO_TARGETS = "no target hosts given"
E_TIMEOUT_RANGE = "timeout must be between 1 and {max} seconds, not {value}"
E_BROKER_DOWN = "broker unreachable at {url}: {exc} (the job was recorded but not dispatched)"
E_NOT_DISPATCHED = "not dispatched: {reason}"
E_CANCELLED_PENDING = "cancelled before any agent started it"

# Publishing retries briefly: a broker that refuses connections is reported in about a second,
# one that black-holes them after broker_connection_timeout per attempt.
RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}

#: Messages per pipelined flush. When a flush fails its whole chunk and the rest are marked
#: not dispatched (a connection that dies mid-pipeline may have delivered part of that chunk).
BATCH_SIZE = 500


class DispatchError(ValueError):
    """The request is invalid; ``problems`` names each reason. Nothing was recorded."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class BrokerUnavailable(RuntimeError):
    """The job was recorded but could not be published; its host tasks say so."""

    def __init__(self, message: str, job: Job):
        self.job = job
        super().__init__(message)


@dataclass(frozen=True)
class CommandRequest:
    command: str
    targets: list[str]
    timeout: int | None = None
    reach_timeout: int | None = None
    requested_by: str = ""


def _validate(request: CommandRequest) -> tuple[list[Host], int, int]:
    cfg = settings.CMDB
    problems = []
    if not request.command or not request.command.strip():
        problems.append(E_EMPTY_COMMAND)
    timeout = cfg["DEFAULT_TIMEOUT"] if request.timeout is None else request.timeout
    if not 1 <= timeout <= cfg["MAX_TIMEOUT"]:
        problems.append(E_TIMEOUT_RANGE.format(max=cfg["MAX_TIMEOUT"], value=timeout))
    reach = cfg["REACH_TIMEOUT"] if request.reach_timeout is None else request.reach_timeout
    if not 1 <= reach <= cfg["MAX_TIMEOUT"]:
        problems.append(E_TIMEOUT_RANGE.format(max=cfg["MAX_TIMEOUT"], value=reach))
    hosts = []
    if not request.targets:
        problems.append(E_NO_TARGETS)
    else:
        try:
            hosts = Host.objects.resolve(request.targets)
        except TargetError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DispatchError(problems)
    return hosts, timeout, reach


def dispatch_command(request: CommandRequest, app: Celery) -> Job:
    """Record a command job for the targets and publish it; return the job at once."""
    hosts, timeout, reach = _validate(request)
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.create(
            kind=JobKindChoices.COMMAND,
            command=request.command,
            timeout=timeout,
            reach_timeout=reach,
            requested_by=request.requested_by,
            created=now,
        )
        tasks = HostTask.objects.bulk_create(
            HostTask(
                job=job,
                host=host,
                ip=host.ip,
                task_id=str(uuid.uuid4()),
                reach_deadline=now + timedelta(seconds=reach),
            )
            for host in hosts
        )
        # Publish only once the rows exist for everyone: a fast agent's result must find them.
        transaction.on_commit(lambda: publish(job, tasks, app))
    return job


def _spec(job: Job, task: HostTask, reply_queue: str) -> dict:
    cfg = settings.CMDB
    return {
        "job": str(job.pk),
        "host": task.ip,
        "command": job.command,
        "timeout": job.timeout,
        "reply_queue": reply_queue,
        "head_bytes": cfg["HEAD_BYTES"],
        "tail_bytes": cfg["TAIL_BYTES"],
        "max_output_bytes": cfg["MAX_OUTPUT_BYTES"],
    }


def _send(app: Celery, producer, job: Job, task: HostTask, reply_queue: str, store) -> None:
    app.send_task(
        config.RUN_COMMAND,
        args=[_spec(job, task, reply_queue)],
        # What `celery events` and logs show; Celery's safe repr of every host's spec was a
        # tenth of the dispatch time.
        argsrepr=f"[job {job.pk} on {task.ip}]",
        kwargsrepr="{}",
        task_id=task.task_id,
        queue=task.ip,
        producer=producer,
        # The agent drops a message it receives after the deadline; the server calls the host
        # unreachable at the same moment.
        expires=task.reach_deadline,
        # Backstops behind the runner's own timeout: soft lets it kill the process group,
        # hard kills a stuck pool child.
        soft_time_limit=job.timeout + 30,
        time_limit=job.timeout + 60,
        link=store,
        retry=True,
        retry_policy=RETRY_POLICY,
    )


def publish(job: Job, tasks: list[HostTask], app: Celery) -> None:
    """Send one message per host task to its host's queue, over one broker connection."""
    reply_queue = config.results_queue()
    store = app.signature(config.STORE_RESULT, options={"queue": reply_queue})
    sent = 0
    try:
        # One connection and, on Redis, one pipelined round trip per chunk (kombu's
        # Producer.batch) instead of one per host. A chunk counts as sent once it is flushed.
        with app.producer_or_acquire() as producer:
            for start in range(0, len(tasks), BATCH_SIZE):
                chunk = tasks[start : start + BATCH_SIZE]
                with producer.batch(max_size=len(chunk)):
                    for task in chunk:
                        _send(app, producer, job, task, reply_queue, store)
                sent += len(chunk)
    except (OperationalError, OSError, redis.RedisError) as exc:
        message = E_BROKER_DOWN.format(url=_redacted(app.conf.broker_url), exc=exc)
        unsent = [t.pk for t in tasks[sent:]]
        with transaction.atomic():
            Job.objects.filter(pk=job.pk).update(
                dispatch_error=message, dispatched_at=timezone.now()
            )
            results.conclude(unsent, State.ERROR, E_NOT_DISPATCHED.format(reason=message))
        job.dispatch_error = message
        raise BrokerUnavailable(message, job) from exc
    job.dispatched_at = timezone.now()
    Job.objects.filter(pk=job.pk).update(dispatched_at=job.dispatched_at)


def _redacted(url: str) -> str:
    # Never print a broker password in an error message or a log.
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def cancel(tasks: list[HostTask], app: Celery, ttl: int = 7 * 24 * 3600) -> int:
    """Cancel the tasks that have not finished; return how many were asked to stop.

    A pending task ends cancelled at once. A running one is interrupted on its agent (SIGUSR1
    makes the runner kill the command's process group) and its agent reports the end.
    """
    active = [t for t in tasks if t.state in State.active()]
    if not active:
        return 0
    ids = [t.task_id for t in active]
    # An agent offline now never hears the broadcast; this mark makes it refuse the message
    # when it comes back before the message expires.
    client = redis.Redis.from_url(app.conf.broker_url, socket_connect_timeout=4)
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.set(config.CANCELLED_KEY.format(task_id=task_id), 1, ex=ttl)
        pipe.execute()
    app.control.revoke(ids, terminate=True, signal="SIGUSR1")
    pending = [t.pk for t in active if t.state == State.PENDING]
    results.conclude(pending, State.CANCELLED, E_CANCELLED_PENDING, only_from={State.PENDING})
    return len(active)
