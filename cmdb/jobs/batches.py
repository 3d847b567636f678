"""Rolling jobs: send the next batch once the previous one has ended, or stop the rest.

A job dispatched with params {"batch": N, "max_failures": M, "canary": C} (cmdb.jobs.rollout)
has its host tasks numbered by batch, the canary's being batch 0; only batch 0 is published at
first. The central worker's monitor calls advance() on every sweep, so the next batch leaves at
most one sweep interval after the last host of the previous one ended, whichever way it ended
(result, timeout, unreachable, lost). Any host not ok counts as failed. The rest is stopped,
cancelled with the reason, when the canary had a failure or more than M hosts have failed.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from cmdb.access import grants
from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import Host
from cmdb.jobs import lifecycle, rollout
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.dispatch import publish
from cmdb.jobs.models import HostTask, Job
from cmdb.jobs.signer import SigningKeyError, private_key

E_CANNOT_SIGN = "not sent: the central worker cannot sign messages for agents: {exc}"
E_REVOKED = ("not sent: {by} may no longer act on this host (a grant or their account "
             "changed since the job was dispatched)")  # fmt: skip
E_NOT_ACCEPTED = "not sent: the host's agent key is no longer accepted (`manage.py keys list`)"
E_STOPPED = (
    "not started: {failed} host(s) failed, more than the {limit} allowed (--max-failures {given})"
)
E_CANARY_FAILED = "not started: the canary failed on {failure}{more}"
E_MORE = " (and on {n} more host(s) of it)"
#: Characters of a host's error quoted in the reason of the rest.
QUOTED = 200


def _failure(task: HostTask) -> str:
    """What became of a failed host: "127.0.1.31: failed, exit 1", with its error's first line."""
    what = task.state + (f", exit {task.exit_code}" if task.exit_code is not None else "")
    error = (task.error or "").strip().splitlines()
    return f"{task.ip}: {what}" + (f": {error[0][:QUOTED]}" if error else "")


def why_stop(params: dict, failed: list[HostTask]) -> str | None:
    """Why the held batches must not go, given the released hosts that failed; None: go on."""
    canary = [t for t in failed if t.batch == 0] if params.get("canary") else []
    if canary:
        more = E_MORE.format(n=len(canary) - 1) if len(canary) > 1 else ""
        return E_CANARY_FAILED.format(failure=_failure(canary[0]), more=more)
    limit = params.get("max_failures")
    if limit is not None and len(failed) > limit:
        return E_STOPPED.format(failed=len(failed), limit=limit,
                                given=rollout.given(params, "max_failures"))  # fmt: skip
    return None


def _revoked(job: Job, tasks: list[HostTask]) -> set[int]:
    """The tasks (pks) whose requester may no longer act on their host: the user the
    dispatch's audit entry names (none: the server's own job)."""
    name = (AuditEntry.objects.filter(action=AuditActionChoices.DISPATCH, job_id=job.pk)
            .values_list("username", flat=True).first())  # fmt: skip
    if not name or not tasks:
        return set()
    user = get_user_model().objects.filter(username=name).first()
    action = grants.ACTION_OF_KIND[job.kind]
    hosts = Host.objects.filter(pk__in=[t.host_id for t in tasks])
    allowed = set(grants.hosts_for(user, action, hosts).values_list("pk", flat=True))
    return {t.pk for t in tasks if t.host_id not in allowed}


def _cannot_sign() -> str | None:
    try:
        private_key()
    except SigningKeyError as exc:
        return E_CANNOT_SIGN.format(exc=exc)
    return None


def held_jobs() -> list:
    """Jobs with host tasks still waiting for their batch."""
    held = HostTask.objects.filter(
        state=State.PENDING, reach_deadline__isnull=True, job__params__has_key="batch"
    )
    return list(held.values_list("job_id", flat=True).distinct())


def advance(job_id, app) -> str:
    """Publish the job's next batch, stop it, or leave it; returns which ("sent", ...)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        tasks = list(HostTask.objects.select_for_update().filter(job=job))
        held = [t for t in tasks if t.state == State.PENDING and t.reach_deadline is None]
        released = [t for t in tasks if t not in held]
        if not held or any(t.state in State.active() for t in released):
            return "waiting"
        failed = sorted((t for t in released if t.state != State.OK), key=lambda t: t.ip)
        stopped = why_stop(job.params, failed)
        cannot_sign = _cannot_sign()
        if stopped:
            stop, ending, to_send = [t.pk for t in held], (State.CANCELLED, stopped), []
        elif cannot_sign:
            # Sent unsigned, every host would refuse it; ended now, with the reason, rather
            # than "unreachable" at the reach deadline.
            stop, ending, to_send = [t.pk for t in held], (State.ERROR, cannot_sign), []
        else:
            stop = []
            batch = min(t.batch for t in held)
            to_send = [t for t in held if t.batch == batch]
            # A host rejected (or pending again) since the job was dispatched receives nothing.
            accepted = set(Host.objects.accepted().filter(pk__in=[t.host_id for t in to_send])
                           .values_list("pk", flat=True))  # fmt: skip
            unaccepted = [t.pk for t in to_send if t.host_id not in accepted]
            to_send = [t for t in to_send if t.host_id in accepted]
            # Nor one its requester may no longer act on (a grant removed, a user made
            # inactive while the job rolled out).
            revoked = _revoked(job, to_send)
            to_send = [t for t in to_send if t.pk not in revoked]
            deadline = timezone.now() + timedelta(seconds=job.reach_timeout)
            HostTask.objects.filter(pk__in=[t.pk for t in to_send]).update(reach_deadline=deadline)
            for task in to_send:
                task.reach_deadline = deadline
    if stop:
        lifecycle.conclude(stop, *ending, only_from={State.PENDING})
        return "stopped"
    lifecycle.conclude(unaccepted, State.ERROR, E_NOT_ACCEPTED, only_from={State.PENDING})
    lifecycle.conclude(list(revoked), State.ERROR, E_REVOKED.format(by=job.requested_by),
                       only_from={State.PENDING})  # fmt: skip
    publish(job, to_send, app)
    return "sent"
