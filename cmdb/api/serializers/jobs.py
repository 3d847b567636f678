"""Jobs and host tasks, as cmdb.jobs.documents renders them (the fields are its schema)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse
from rest_framework.utils.urls import replace_query_param

from cmdb.access import visible
from cmdb.jobs import documents, listing, rollout
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job


class StreamSerializer(serializers.Serializer):
    head = serializers.CharField(help_text="The start of the stream (all of it if not truncated).")
    tail = serializers.CharField(help_text="The end, set only when the middle was dropped.")
    bytes = serializers.IntegerField(help_text="The stream's true size on the host.")
    truncated = serializers.BooleanField(help_text="True when the middle was not kept.")


@extend_schema_field(StreamSerializer(allow_null=True))
class StreamField(serializers.Field):
    """One output stream of a host task, as ``HostTask.stream()`` gives it; null for a user
    without jobs.view_output."""

    def __init__(self, stream: str, **kwargs):
        self.stream = stream
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, task: HostTask) -> dict:
        return task.stream(self.stream)  # the schema's; documents.task_document renders it


class FetchedFileSerializer(serializers.Serializer):
    sha256 = serializers.CharField(help_text="Checked against the host's when it was stored.")
    size = serializers.IntegerField()
    download = serializers.URLField(help_text="GET it (it sends Repr-Digest: sha-256).")
    removed = serializers.DateTimeField(
        allow_null=True,
        help_text="When the server's copy was removed (CMDB_FETCH_KEEP_DAYS); null while kept.",
    )


class RolledSerializer(serializers.Serializer):
    given = serializers.CharField(help_text='As the request gave it: "3", "10%".')
    hosts = serializers.IntegerField(help_text="Resolved against the job's host count.")


class RollingSerializer(serializers.Serializer):
    canary = serializers.IntegerField(
        allow_null=True, help_text="Hosts sent to first, alone; null: no canary."
    )
    batch = RolledSerializer(
        allow_null=True, help_text="Hosts at a time after the canary; null: the rest at once."
    )
    max_failures = RolledSerializer(
        allow_null=True, help_text="Failed hosts allowed before the rest is cancelled."
    )


class LateResultSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=State.choices, help_text="What the host reported.")
    received_at = serializers.DateTimeField(help_text="When the server received it.")


class RenderedMixin:
    """The representation is cmdb.jobs.documents' (one renderer for the API and `check_task
    --json`); the declared fields are its schema, and a test holds the two together."""

    def link(self):
        request = self.context.get("request")
        return lambda name, **kwargs: reverse(name, kwargs=kwargs, request=request)

    def output(self) -> bool:
        request = self.context.get("request")
        # jobs.view_output: what reading the host's output (stdout, stderr, files) takes.
        return bool(request) and visible.reads_output(request.user)


class HostTaskSerializer(RenderedMixin, serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(
        view_name="api:hosttask-detail", lookup_field="task_id"
    )
    host = serializers.IPAddressField(
        source="ip", read_only=True, protocol="IPv4", help_text="The IP the task was sent to."
    )
    celery_state = serializers.CharField(
        read_only=True,
        help_text="The django-celery-results status of this task id (PENDING until the first "
        "report: STARTED, SUCCESS for any exit code, FAILURE, REVOKED).",
    )
    host_id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The host's id (null once it was removed)."
    )
    stdout = StreamField("stdout")
    stderr = StreamField("stderr")
    file = serializers.SerializerMethodField(
        help_text="Fetch: the server's copy of this host's file; null until stored."
    )
    late = serializers.SerializerMethodField(
        help_text="A result the host sent after the server had called the task lost (the state "
        "stays lost; exit code and output are the late result's); null if none."
    )

    class Meta:
        model = HostTask
        fields = [
            "task_id",
            "url",
            "job",
            "host",
            "host_id",
            "state",
            "celery_state",
            "exit_code",
            "duration",
            "started_at",
            "finished_at",
            "agent",
            "error",
            "late",
            "stdout",
            "stderr",
            "file",
        ]
        read_only_fields = fields

    def to_representation(self, task: HostTask) -> dict:
        return documents.task_document(task, self.link(), self.output())

    @extend_schema_field(LateResultSerializer(allow_null=True))
    def get_late(self, task: HostTask) -> dict | None:
        return documents.late_result(task)

    @extend_schema_field(FetchedFileSerializer(allow_null=True))
    def get_file(self, task: HostTask) -> dict | None:
        return documents.fetched_file(task, self.link())


class JobSerializer(RenderedMixin, serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:job-detail")
    done = serializers.SerializerMethodField(help_text="Every host task shown has ended.")
    ok = serializers.SerializerMethodField(help_text="Every host task shown ended ok.")
    summary = serializers.SerializerMethodField(help_text="Host tasks shown, per state.")
    hidden_hosts = serializers.IntegerField(
        read_only=True,
        help_text="Host tasks of this job on hosts you may not view: not in tasks, summary, "
        "done or ok (0: the job is shown whole).",
    )
    rolling = serializers.SerializerMethodField(
        help_text="How the job goes out, a canary then batches; null: to every host at once."
    )
    tasks = HostTaskSerializer(
        source="host_tasks", many=True, read_only=True,
        help_text="The first host tasks shown, by IP (all of them up to the API's page size); "
        "the rest from tasks_next.",
    )  # fmt: skip
    tasks_next = serializers.URLField(
        read_only=True, allow_null=True,
        help_text="The next page of this job's host tasks (GET /api/jobs/{id}/tasks/, "
        "paginated as every list); null: tasks has every one shown.",
    )  # fmt: skip

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "kind",
            "command",
            "timeout",
            "reach_timeout",
            "requested_by",
            "created",
            "dispatched_at",
            "dispatch_error",
            "rolling",
            "done",
            "ok",
            "summary",
            "hidden_hosts",
            "tasks",
            "tasks_next",
        ]

    def to_representation(self, job: Job) -> dict:
        # host_tasks and hidden_hosts as the view narrowed them (cmdb.access.visible); or only
        # the first page of them (first_tasks), with task_counts of them all.
        tasks = getattr(job, "first_tasks", None)
        tasks = list(job.host_tasks.all()) if tasks is None else tasks
        counts = getattr(job, "task_counts", None)
        link, following = self.link(), None
        if counts is not None and sum(counts.values()) > len(tasks):
            following = replace_query_param(link("api:job-tasks", pk=job.pk), "offset", len(tasks))
            following = replace_query_param(following, "limit", len(tasks))
        elif counts is not None:
            # Every task is shown: its state, done and summary from those very rows. The counts
            # were read a moment later, and a task that ended in between would make a job
            # "done" that shows it running.
            counts = None
        return documents.job_document(job, tasks, link, self.output(),
                                      getattr(job, "hidden_hosts", 0), counts,
                                      following)  # fmt: skip

    @extend_schema_field(RollingSerializer(allow_null=True))
    def get_rolling(self, job: Job) -> dict | None:
        return rollout.summary(job.params)

    def get_done(self, job: Job) -> bool:
        return documents.progress(list(job.host_tasks.all())).done

    def get_ok(self, job: Job) -> bool:
        return documents.progress(list(job.host_tasks.all())).ok

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_summary(self, job: Job) -> dict:
        return documents.progress(list(job.host_tasks.all())).counts


class DispatchedTaskSerializer(serializers.ModelSerializer):
    host = serializers.IPAddressField(source="ip", protocol="IPv4")

    class Meta:
        model = HostTask
        fields = ["host", "task_id"]


class NotAnsweringSerializer(serializers.Serializer):
    skipped = serializers.ListField(child=serializers.IPAddressField(protocol="IPv4"))
    offline = serializers.ListField(child=serializers.IPAddressField(protocol="IPv4"))
    never_seen = serializers.ListField(child=serializers.IPAddressField(protocol="IPv4"))


class JobDispatchedSerializer(serializers.ModelSerializer):
    """What POST /api/jobs/ answers at once: where to poll the job and each host's task."""

    url = serializers.HyperlinkedIdentityField(view_name="api:job-detail")
    tasks = DispatchedTaskSerializer(source="host_tasks", many=True)
    not_answering = serializers.SerializerMethodField(
        help_text="The targets that will not answer: skipped (online_only left them out), "
        "offline and never_seen (their agent is not online: they end unreachable after the "
        "reach timeout). Empty lists when every one is online."
    )

    @extend_schema_field(NotAnsweringSerializer)
    def get_not_answering(self, job) -> dict:
        return listing.not_answering_document(job)

    class Meta:
        model = Job
        fields = ["id", "kind", "tasks", "url", "not_answering"]
