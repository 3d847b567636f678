"""One entry point per action, whatever the front-end: run, collect, push, fetch, cancel.

The CLI, the API, the admin and the central worker's own tasks call only these. Each action
owns its order (check everything the request says, then the signing key, then upload, record
and publish) and raises only the ServiceError family (cmdb.jobs.exceptions), which each
front-end maps once: CLI exit codes (cmdb.jobs.cli), API status codes (cmdb.api.errors),
admin messages (cmdb.web.actions).
"""

import errno
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, NamedTuple

from django.conf import settings
from kombu.exceptions import KombuError
from redis import RedisError

from cmdb import audit
from cmdb.access import grants, visible
from cmdb.access.actor import Actor
from cmdb.access.models import Action
from cmdb.audit.choices import AuditActionChoices, AuditOutcomeChoices
from cmdb.audit.models import AuditEntry
from cmdb.celery import app as cmdb_app
from cmdb.files import uploads
from cmdb.hosts.models import Host
from cmdb.jobs import dispatch
from cmdb.jobs.broker import BROKER_ERRORS
from cmdb.jobs.choices import HostTaskStateChoices, JobKindChoices
from cmdb.jobs.dispatch import MAX_REACH_TIMEOUT, CommandRequest, Problems
from cmdb.jobs.exceptions import (
    BrokerDown,
    NeedsConfirmation,
    NotFound,
    NotPermitted,
    Refused,
    TooLarge,
    Unavailable,
)
from cmdb.jobs.models import E_UNKNOWN_ID, HostTask, Job
from cmdb.jobs.rollout import Rollout
from wire.blobs import TransferError

E_RELATIVE = "give an absolute path (it starts with /), not {path!r}"
E_OWNER = "owner must be user, user:group or :group (names or numbers), not {owner!r}"
E_TOO_LARGE = "the file is larger than CMDB_MAX_UPLOAD_BYTES ({limit} bytes)"
E_UPLOAD_FAILED = "nothing pushed: the file could not be put in the broker: {exc}"
E_SERVER_DISK = "nothing pushed: the server has no room to unpack or pack it: {exc}"
E_UNREADABLE = "cannot read {what}: {exc}"
E_RERUN_PUSH = (
    "a push is not re-run: its file is not kept once sent; push it again "
    "(--hosts takes the list `check_task ID --failed --hosts-only` prints)"
)
E_RERUN_NONE = "no host of job {job} is in {states}: nothing to re-run"
E_CANCEL_BROKER_DOWN = "broker unreachable: {exc} (the cancel may not have reached the agents)"

__all__ = ["MAX_REACH_TIMEOUT", "Found", "Targets", "Upload", "cancel", "collect", "fetch",
           "find", "push", "rerun", "run"]  # fmt: skip

#: user, user:group, :group (the group only) or user: (as chown takes them).
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_OWNER = re.compile(rf"{_NAME}(:({_NAME})?)?|:{_NAME}")


@dataclass(frozen=True)
class Targets:
    """Where an action goes, how long it may take and how it goes there, as every front-end
    gives it: the union of ``hosts`` (IPs or hostnames) and the members of ``groups``,
    filtered by every ``where`` expression (alone, ``where`` filters every host); all at once,
    or a ``canary`` then a ``batch`` at a time, stopped past ``max_failures``
    (cmdb.jobs.rollout); ``confirm``: reach more hosts than the requester's ceiling."""

    hosts: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    timeout: int | None = None
    reach_timeout: int | None = None
    batch: int | str | None = None
    max_failures: int | str | None = None
    canary: int | str | None = None
    confirm: bool = False
    #: Every host the requester may act on (--all, "all": true), besides any other target.
    all_hosts: bool = False
    #: Leave out the targets whose agent is not online now (--online-only).
    online_only: bool = False

    @classmethod
    def of(cls, given: Mapping) -> "Targets":
        """From the keys the CLI's options and the API's request bodies share."""
        return cls(hosts=list(given.get("hosts") or []), groups=list(given.get("groups") or []),
                   where=list(given.get("where") or []), timeout=given.get("timeout"),
                   reach_timeout=given.get("reach_timeout"), batch=given.get("batch"),
                   max_failures=given.get("max_failures"), canary=given.get("canary"),
                   confirm=bool(given.get("confirm")), all_hosts=bool(given.get("all")),
                   online_only=bool(given.get("online_only")))  # fmt: skip

    def request(self, kind: str, requested_by: "str | Actor", command: str = "", params=None):
        """``requested_by``: the Actor asking (a user's request reaches only what their grants
        allow), or a label for the server's own doing ("schedule", "key accepted")."""
        actor = requested_by if isinstance(requested_by, Actor) else None
        # The job names the user (what `requested_by=` filters on); the audit trail has the
        # front-end and the address too.
        label = (actor.username or actor.via) if actor else requested_by
        return CommandRequest(kind=kind, command=command, targets=list(self.hosts),
                              groups=list(self.groups), where=list(self.where),
                              timeout=self.timeout, reach_timeout=self.reach_timeout,
                              requested_by=label, params=params or {}, actor=actor,
                              rollout=Rollout(self.batch, self.max_failures, self.canary),
                              confirm=self.confirm, all_hosts=self.all_hosts,
                              online_only=self.online_only)  # fmt: skip


@dataclass(frozen=True)
class Upload:
    """A file received over HTTP (binary, seekable: Django spools large uploads to disk);
    with ``archive``, a tar (any compression) of a folder to put at the destination."""

    file: BinaryIO
    name: str
    size: int
    archive: bool = False


def _check(request: CommandRequest, problems: Problems) -> None:
    """Every problem of the request at once: its own (``problems``) and its targets'; a
    refusal is in the audit trail, and keeps its kind (NotPermitted when grants refuse it)."""
    refusal = Refused
    try:
        dispatch.check_request(request)
    except Refused as exc:
        if not problems:
            # As it is: NotPermitted is a 403, NeedsConfirmation a step in the admin.
            dispatch.record_refusal(request, exc.problems)
            raise
        if not isinstance(exc, NeedsConfirmation):  # asked for once all else is right
            refusal = type(exc)  # NotPermitted stays a 403
            for name, messages in exc.by_field.items():
                problems.add(name, *messages)
    if problems:
        dispatch.record_refusal(request, [m for ms in problems.values() for m in ms])
        raise refusal(problems)


def run(command: str, targets: Targets, requested_by: str, app=cmdb_app,
        keep_output: bool | None = None) -> Job:  # fmt: skip
    """Run a shell command on every target; returns the job at once. ``keep_output`` (None:
    the setting CMDB_KEEP_OUTPUT) keeps each host's whole output, within the cap, on the server."""
    cfg = settings.CMDB
    keep = cfg["KEEP_OUTPUT"] if keep_output is None else keep_output
    params = {"keep_output": cfg["KEEP_OUTPUT_MAX_BYTES"]} if keep else None
    return dispatch.dispatch_command(
        targets.request(JobKindChoices.COMMAND, requested_by, command, params=params), app
    )


def collect(targets: Targets, requested_by: str, app=cmdb_app) -> Job:
    """Collect facts from every target again."""
    return dispatch.dispatch_command(targets.request(JobKindChoices.COLLECT, requested_by), app)


def _absolute(path, field_name: str, problems: Problems) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        problems.add(field_name, E_RELATIVE.format(path=path))


def push(
    source: str | Upload,
    dest: str,
    targets: Targets,
    requested_by: str,
    mode: str | None = None,
    owner: str | None = None,
    allow_unsafe_parents: bool = False,
    app=cmdb_app,
) -> Job:
    """Put a file (or a folder, as one archive unpacked on each host) at ``dest`` on every
    target. ``source`` is a path on this server (the CLI) or an Upload (the API, the admin).
    ``allow_unsafe_parents``: also where a folder on the way is one a non-root user can change
    (agents refuse that otherwise: that user could swap what root writes).

    Everything is checked before anything is uploaded (a large upload for a mistyped host
    would be for nothing, and a blob nobody pushes would sit in the broker for hours)."""
    problems = Problems()
    _absolute(dest, "dest", problems)
    try:
        uploads.parse_mode(mode)
    except ValueError as exc:
        problems.add("mode", str(exc))
    owner = owner or None  # an empty owner leaves it as it is, as none
    if owner is not None and not _OWNER.fullmatch(owner):
        problems.add("owner", E_OWNER.format(owner=owner))
    limit = settings.CMDB["MAX_UPLOAD_BYTES"]
    if isinstance(source, Upload) and source.size > limit:
        raise TooLarge({"file": [E_TOO_LARGE.format(limit=limit)]})
    if isinstance(source, str) and not os.path.exists(source):
        problems.add("source", uploads.E_NO_SOURCE.format(path=source))
    request = targets.request(JobKindChoices.PUSH, requested_by)
    field_name = "file" if isinstance(source, Upload) else "source"
    _check(request, problems)
    dispatch.check_key()  # before the upload, not only before the job
    try:
        if isinstance(source, Upload):
            params = uploads.prepare_upload(app, source.file, source.name, dest, mode, owner,
                                            archive=source.archive, max_bytes=limit)  # fmt: skip
        else:
            params = uploads.prepare_push(app, source, dest, mode, owner)
    except TransferError as exc:
        raise Refused({field_name: [str(exc)]}) from None
    except (KombuError, RedisError) as exc:
        raise BrokerDown(E_UPLOAD_FAILED.format(exc=exc)) from exc
    except OSError as exc:
        # This server's own files, not the broker (whose errors come as the ones above).
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise Unavailable(E_SERVER_DISK.format(exc=exc)) from exc
        what = "the upload" if isinstance(source, Upload) else repr(source)
        raise Refused({field_name: [E_UNREADABLE.format(what=what, exc=exc)]}) from None
    if allow_unsafe_parents:
        params["agent"]["allow_unsafe_parents"] = True
    return dispatch.dispatch_command(replace(request, params=params), app)


def fetch(path: str, targets: Targets, requested_by: str, to: str | None = None,
          app=cmdb_app) -> Job:  # fmt: skip
    """Copy the file at ``path`` from every target to the server, verified by sha256: into
    ``to/<ip>/`` (a folder on the central worker's machine), else CMDB_FETCH_DIR/<job id>/<ip>/,
    where the API and the admin serve the copies."""
    problems = Problems()
    _absolute(path, "path", problems)
    params = {"agent": {"path": path}}
    if to:
        # The central worker writes the files: it needs the folder as an absolute path.
        params["to"] = str(Path(to).resolve())
    request = targets.request(JobKindChoices.FETCH, requested_by, params=params)
    _check(request, problems)
    return dispatch.dispatch_command(request, app)


class Found(NamedTuple):
    """A job and the host tasks of it that are shown; ``hidden``: how many others it has."""

    job: Job | None
    tasks: list[HostTask]
    hidden: int = 0


def find(ident: str, user=None) -> Found:
    """The job, and its host tasks, behind a job id or a per-host task id (both are printed).

    ``user``: only what they may view (cmdb.access.visible): the host tasks on their hosts,
    the others counted; a job or task they may not view at all is NotFound, as an unknown id
    is. None: everything (the server's own operator).
    """
    tasks = HostTask.objects.all() if user is None else visible.viewable_tasks(user)
    try:
        job, found = tasks.for_id(ident)
    except LookupError as exc:
        raise NotFound(str(exc)) from None
    if user is None or job is None or _is_task_id(ident, found):
        return Found(job, found)
    hidden = (visible.viewable_jobs(user, Job.objects.filter(pk=job.pk))
              .values_list("hidden_hosts", flat=True).first())  # fmt: skip
    if hidden is None:
        raise NotFound(E_UNKNOWN_ID.format(ident=ident.strip()))
    return Found(job, found, hidden)


def _is_task_id(ident: str, tasks: list[HostTask]) -> bool:
    # A host task's id finds that task alone (a job of one host is found by the job's id).
    return len(tasks) == 1 and tasks[0].task_id == ident.strip()


def _may_cancel(user, actor: Actor, tasks: list[HostTask]) -> None:
    """NotPermitted unless ``user`` may cancel these tasks: the cancel permission, and a cancel
    grant on every unfinished one's host, except in their own jobs (who started something may
    stop it). Refused attempts are in the audit trail."""
    active = [t for t in tasks if t.state in HostTaskStateChoices.active()]
    problems, name = Problems(), user.get_username()
    if not user.has_perm("jobs.cancel_job"):
        problems.add("id", grants.E_NO_PERMISSION.format(user=name, action="cancel",
                                                         perm="jobs.cancel_job"))  # fmt: skip
    # Their own: the audit's dispatch entry names them as a user (a job's requested_by is
    # text: a user named "schedule" must not own the scheduled collections).
    dispatched = AuditEntry.objects.filter(action=AuditActionChoices.DISPATCH, username=name,
                                           job_id__in={t.job_id for t in active})  # fmt: skip
    own = set(dispatched.values_list("job_id", flat=True))
    others = Host.objects.filter(pk__in={t.host_id for t in active if t.job_id not in own})
    problems.add("id", *grants.refusals(user, Action.CANCEL, others))
    if problems:
        audit.record(actor, AuditActionChoices.CANCEL, outcome=AuditOutcomeChoices.REFUSED,
                     job=active[0].job_id if active else None, detail={"reason": problems},
                     targets_resolved=[t.ip for t in active])  # fmt: skip
        raise NotPermitted(problems)


def cancel(ident: str | list[HostTask], app=cmdb_app, actor: Actor | None = None) -> int:
    """Stop what has not finished of a job or a host task (an id, or the tasks themselves);
    returns how many host tasks were asked to stop."""
    user = getattr(actor, "user", None)
    # What the user may not view is not theirs to cancel, nor to be told about.
    tasks = find(ident, user).tasks if isinstance(ident, str) else ident
    if user is not None:
        _may_cancel(user, actor, tasks)
    try:
        return dispatch.cancel(tasks, app, actor)
    except BROKER_ERRORS as exc:
        raise BrokerDown(E_CANCEL_BROKER_DOWN.format(exc=exc)) from exc


#: What "re-run on failed hosts" takes (the web's button): every end state but ok.
RERUN_STATES = ("failed", "timeout", "cancelled", "unreachable", "lost", "error")
#: What re-running a job takes, by its kind: what dispatching it anew takes (the API's
#: permissions), so that one who may only view a job cannot run it again.
RERUN_PERMISSION = {JobKindChoices.COMMAND: "jobs.run_command",
                    JobKindChoices.COLLECT: "jobs.collect_facts",
                    JobKindChoices.FETCH: "jobs.run_command"}  # fmt: skip


def rerun(ident: str, states=(), actor: Actor | None = None, app=cmdb_app,
          online_only: bool = False, confirm: bool = False) -> Job:  # fmt: skip
    """A new job, the same command (or collection, or fetch) with the same timeouts, on the
    hosts of job ``ident`` whose task is in one of ``states`` (all its hosts when none is
    given) and that ``actor`` may view (a host task's id: that host). It is asked for as
    run is: their permissions and grants decide, and the new job is theirs."""
    user = getattr(actor, "user", None)
    found = find(ident, user)
    job = found.job
    if job is None:
        raise NotFound(E_UNKNOWN_ID.format(ident=ident.strip()))
    if job.kind == JobKindChoices.PUSH:
        raise Refused({"id": [E_RERUN_PUSH]})
    perm = RERUN_PERMISSION[job.kind]
    if user is not None and not user.has_perm(perm):
        raise NotPermitted({"id": [grants.E_NO_PERMISSION.format(
            user=user.get_username(), action="re-run", perm=perm)]})  # fmt: skip
    wanted = set(states)
    hosts = [t.ip for t in found.tasks if not wanted or t.state in wanted]
    if not hosts:
        named = ", ".join(sorted(wanted)) or "any state"
        raise Refused({"states": [E_RERUN_NONE.format(job=job.pk, states=named)]})
    targets = Targets(hosts=hosts, timeout=job.timeout, reach_timeout=job.reach_timeout,
                      online_only=online_only, confirm=confirm)  # fmt: skip
    by = actor if actor is not None else "cli"
    if job.kind == JobKindChoices.COMMAND:
        return run(job.command, targets, by, app)
    if job.kind == JobKindChoices.COLLECT:
        return collect(targets, by, app)
    return fetch(job.params["agent"]["path"], targets, by, to=job.params.get("to"), app=app)
