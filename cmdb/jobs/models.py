"""Job and HostTask models."""

import uuid

from celery import states as celery_states
from django.db import models
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

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
        """The host tasks behind a job id or a per-host Celery task id (both are printed)."""
        ident = ident.strip()
        try:
            job = Job.objects.filter(pk=uuid.UUID(ident)).first()
        except ValueError:
            job = None
        tasks = self.with_celery_state()
        if job is not None:
            return job, list(tasks.filter(job=job).order_by("ip"))
        task = tasks.select_related("job").filter(task_id=ident).first()
        if task is None:
            raise LookupError(E_UNKNOWN_ID.format(ident=ident))
        return task.job, [task]


class HostTask(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="host_tasks")
    host = models.ForeignKey(
        "hosts.Host", on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks"
    )
    # The IP at dispatch time: history survives the host being removed or renumbered.
    ip = models.GenericIPAddressField("IP address", protocol="IPv4")
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
        ordering = ["job", "ip"]
        verbose_name = "host task"
        # Output and fetched files are what the hosts hold (a shadow file, keys, logs): reading
        # them takes more than seeing that a job ran where.
        permissions = [("view_output", "Can read host tasks' output and fetched files")]
        indexes = [models.Index(fields=["state", "reach_deadline"], name="hosttask_sweep")]

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
