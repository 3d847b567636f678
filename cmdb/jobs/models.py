"""Job and HostTask models."""

import itertools
import re
import uuid

from celery import states as celery_states
from django.db import models
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from cmdb.hosts.fields import IPKeyField
from cmdb.jobs.choices import HostTaskStateChoices, JobKindChoices

State = HostTaskStateChoices


class Job(models.Model):
    id = models.UUIDField("job id", primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(
        "kind", max_length=16, choices=JobKindChoices.choices, default=JobKindChoices.COMMAND
    )
    command = models.TextField("command")
    timeout = models.PositiveIntegerField(
        "timeout", help_text="Seconds the command may run on each host before it is killed."
    )
    reach_timeout = models.PositiveIntegerField(
        "reach timeout",
        help_text="Seconds a host's agent has to pick the task up before it is unreachable.",
    )
    requested_by = models.CharField("requested by", max_length=150, blank=True)
    created = models.DateTimeField("created", default=timezone.now, db_index=True)
    dispatched_at = models.DateTimeField("dispatched", null=True, blank=True)
    dispatch_error = models.TextField(
        "dispatch error", blank=True, help_text="Why the job was not (fully) dispatched."
    )
    params = models.JSONField(
        "parameters", default=dict, blank=True,
        help_text="What the kind needs: push source and target, fetch path, batch size ...",
    )  # fmt: skip
    blob_released_at = models.DateTimeField(
        "blob released", null=True, blank=True,
        help_text="Push: when the pushed file's blob was deleted from the broker's Redis.",
    )  # fmt: skip

    class Meta:
        ordering = ["-created"]
        verbose_name = "job"
        # Who may act on hosts, apart from who may read jobs (view_job).
        permissions = [
            ("run_command", "Can run commands on hosts"),
            ("collect_facts", "Can collect facts from hosts"),
            ("cancel_job", "Can cancel jobs"),
        ]

    def __str__(self):
        return f"{self.id} {self.command[:60]}"

    def get_absolute_url(self):
        # The live page: every host's output, monospaced, refreshing until all have finished.
        return reverse("web:job", kwargs={"job_id": self.pk})

    @property
    def dispatched(self) -> bool:
        return self.dispatched_at is not None and not self.dispatch_error


E_UNKNOWN_ID = "no job or host task has the id {ident!r}"
E_AMBIGUOUS = "the id {ident!r} is the start of {count} ids; give more of it: {ids}"
#: The fewest characters of an id taken as its prefix, and the candidates an error lists.
MIN_PREFIX, MAX_CANDIDATES = 4, 10
_HEX = re.compile(r"[0-9a-f]+")


def id_prefix(ident: str) -> str | None:
    """``ident`` as the start of an id in its canonical form (lower case, hyphens where a UUID
    has them: PostgreSQL compares a uuid's text so, SQLite its hex digits, with the hyphens
    taken out by Django); None unless it is hex digits of a length a prefix may be."""
    digits = ident.strip().lower().replace("-", "")
    if not (MIN_PREFIX <= len(digits) < 32) or not _HEX.fullmatch(digits):
        return None
    cuts = [0, 8, 12, 16, 20, 32]
    parts = [digits[a:b] for a, b in itertools.pairwise(cuts) if digits[a:b]]
    return "-".join(parts)


def _ambiguous(ident: str, ids: list[str]) -> str:
    more = ", ..." if len(ids) > MAX_CANDIDATES else ""
    return E_AMBIGUOUS.format(ident=ident, count=f"{len(ids)}{'+' if more else ''}",
                              ids=", ".join(ids[:MAX_CANDIDATES]) + more)  # fmt: skip


class HostTaskQuerySet(models.QuerySet):
    def active(self):
        return self.filter(state__in=State.active())

    def with_celery_state(self):
        """Annotated with their django-celery-results status, in the same query. A task id
        without a TaskResult row yet (no report so far) is PENDING, as Celery's AsyncResult
        says of any id it has no result for."""
        status = TaskResult.objects.filter(task_id=OuterRef("task_id")).values("status")[:1]
        return self.annotate(celery_state=Coalesce(Subquery(status), Value(celery_states.PENDING)))

    def for_id(self, ident: str) -> tuple["Job | None", list["HostTask"]]:
        """The host tasks behind a job id or a per-host Celery task id (both are printed), or
        a prefix of one (the `jobs` command's short ids) that names only it."""
        ident = ident.strip()
        try:
            job = Job.objects.filter(pk=uuid.UUID(ident)).first()
        except ValueError:
            job = None
        tasks = self.with_celery_state()
        if job is None and (task := tasks.select_related("job").filter(task_id=ident).first()):
            return task.job, [task]
        if job is None:
            job, task = self._by_prefix(ident)
            if task is not None:
                return job, list(tasks.filter(pk=task.pk))
        return job, list(tasks.filter(job=job).order_by("ip_key"))

    def _by_prefix(self, ident: str) -> tuple["Job", "HostTask | None"]:
        """The one job (or else host task) whose id starts with ``ident``, among those of the
        tasks in this queryset (a user's prefix never names a job they may not view)."""
        prefix = id_prefix(ident)
        if prefix is None:
            raise LookupError(E_UNKNOWN_ID.format(ident=ident))
        jobs = Job.objects.filter(pk__startswith=prefix).order_by("-created")
        if self.query.where:  # narrowed (a user's view): only the jobs of those tasks
            jobs = jobs.filter(pk__in=self.values("job_id"))
        jobs = list(jobs[: MAX_CANDIDATES + 1])
        if len(jobs) == 1:
            return jobs[0], None
        if jobs:
            raise LookupError(_ambiguous(ident, [str(j.pk) for j in jobs]))
        found = list(self.select_related("job").filter(task_id__startswith=prefix)
                     [:MAX_CANDIDATES + 1])  # fmt: skip
        if len(found) == 1:
            return found[0].job, found[0]
        if found:
            raise LookupError(_ambiguous(ident, [t.task_id for t in found]))
        raise LookupError(E_UNKNOWN_ID.format(ident=ident))


class HostTask(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="host_tasks")
    host = models.ForeignKey(
        "hosts.Host", on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks"
    )
    # The IP at dispatch time: history survives the host being removed or renumbered.
    ip = models.GenericIPAddressField("IP address", protocol="IPv4")
    ip_key = IPKeyField("IP address as a number", help_text="What hosts are listed in order by.")
    task_id = models.CharField("Celery task id", max_length=36, unique=True)
    state = models.CharField(
        "state", max_length=16, choices=State.choices, default=State.PENDING, db_index=True
    )
    exit_code = models.IntegerField("exit code", null=True, blank=True)
    stdout_head = models.TextField("stdout (head)", blank=True)
    stdout_tail = models.TextField(
        "stdout (tail)", blank=True, help_text="Set only when the middle was dropped."
    )
    stdout_bytes = models.BigIntegerField("stdout size", default=0)
    stdout_truncated = models.BooleanField("stdout truncated", default=False)
    stderr_head = models.TextField("stderr (head)", blank=True)
    stderr_tail = models.TextField("stderr (tail)", blank=True)
    stderr_bytes = models.BigIntegerField("stderr size", default=0)
    stderr_truncated = models.BooleanField("stderr truncated", default=False)
    agent = models.CharField("agent", max_length=255, blank=True)
    agent_pid = models.PositiveIntegerField("agent pid", null=True, blank=True)
    reach_deadline = models.DateTimeField(
        "reach deadline",
        null=True,
        blank=True,
        help_text="Unreachable if no agent has started it by then.",
    )
    batch = models.PositiveIntegerField(
        "batch", default=0, help_text="Deploys go batch by batch; later ones wait, unpublished."
    )
    started_at = models.DateTimeField("started", null=True, blank=True)
    finished_at = models.DateTimeField("finished", null=True, blank=True)
    duration = models.FloatField("duration (s)", null=True, blank=True)
    error = models.TextField("error", blank=True)
    late_state = models.CharField(
        "late result", max_length=16, choices=State.choices, blank=True,
        help_text="What the host reported after the server had called the task lost.",
    )  # fmt: skip
    late_at = models.DateTimeField("late result received", null=True, blank=True)
    fetched = models.JSONField(
        "fetched file",
        null=True,
        blank=True,
        help_text="Fetch: the server's copy of this host's file (path, sha256, size).",
    )
    fetched_removed_at = models.DateTimeField(
        "fetched copy removed", null=True, blank=True,
        help_text="Fetch: when the server's copy was removed (CMDB_FETCH_KEEP_DAYS).",
    )  # fmt: skip

    objects = HostTaskQuerySet.as_manager()

    class Meta:
        ordering = ["job", "ip_key"]
        verbose_name = "host task"
        # Output and fetched files are what the hosts hold (a shadow file, keys, logs): reading
        # them takes more than seeing that a job ran where.
        permissions = [("view_output", "Can read host tasks' output and fetched files")]
        indexes = [
            models.Index(fields=["state", "reach_deadline"], name="hosttask_sweep"),
            # A job's hosts by IP, a page at a time (the API, the admin, the job page): read
            # in index order up to the page, not all 10,000 sorted first.
            models.Index(fields=["job", "ip_key"], name="hosttask_job_ip"),
            # A job's tally per state (of the hosts one may view), from the index alone.
            models.Index(fields=["job", "state", "host"], name="hosttask_job_state"),
        ]

    def __str__(self):
        return f"{self.ip} {self.state}"

    @property
    def is_terminal(self) -> bool:
        return self.state in State.terminal()

    def stream(self, name: str) -> dict:
        return {
            "head": getattr(self, f"{name}_head"),
            "tail": getattr(self, f"{name}_tail"),
            "bytes": getattr(self, f"{name}_bytes"),
            "truncated": getattr(self, f"{name}_truncated"),
        }
