"""API serializers.

Host tasks have the shape of ``cmdb.jobs.report.task_json`` (what ``check_task --json`` prints),
with ``celery_state`` and a URL added; a job is flat, with its host tasks under ``tasks``.
"""

from collections import Counter

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from cmdb.assets.models import Asset, Change, HostFacts
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.dispatch import MAX_REACH_TIMEOUT, CommandRequest
from cmdb.jobs.models import HostTask, Job

#: Request fields of POST /api/jobs/ per field of a DispatchError (the CLI says targets).
DISPATCH_FIELDS = {"targets": "hosts"}
E_NO_TARGETS = "no target hosts given (hosts, groups or where)"


# --- hosts -------------------------------------------------------------------------------------
class NestedHostSerializer(serializers.ModelSerializer):
    """A host as other resources point to it."""

    url = serializers.HyperlinkedIdentityField(view_name="api:host-detail")

    class Meta:
        model = Host
        fields = ["id", "url", "ip", "hostname"]


class HostFactsSerializer(serializers.ModelSerializer):
    class Meta:
        model = HostFacts
        fields = [
            "collected_at",
            "os",
            "os_version",
            "kernel",
            "arch",
            "fqdn",
            "cpu_model",
            "cpu_threads",
            "memory_bytes",
            "vendor",
            "product",
            "serial",
            "disk_free_pct",
        ]


class HostSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:host-detail")
    groups = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    facts = HostFactsSerializer(
        read_only=True,
        allow_null=True,
        help_text="From the last collection; null before the first.",
    )

    class Meta:
        model = Host
        fields = [
            "id",
            "url",
            "ip",
            "hostname",
            "agent_status",
            "agent_name",
            "agent_pid",
            "last_seen",
            "created",
            "groups",
            "facts",
        ]


class HostGroupSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:hostgroup-detail")
    hosts = serializers.SlugRelatedField(slug_field="ip", many=True, read_only=True)

    class Meta:
        model = HostGroup
        fields = ["id", "url", "name", "description", "hosts"]


# --- assets and changes ------------------------------------------------------------------------
class AssetSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:asset-detail")
    host = NestedHostSerializer(read_only=True)

    class Meta:
        model = Asset
        fields = ["id", "url", "host", "kind", "key", "data", "metrics", "first_seen", "updated"]


class ChangeSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:change-detail")
    host = NestedHostSerializer(read_only=True)

    class Meta:
        model = Change
        fields = [
            "id",
            "url",
            "host",
            "job",
            "time",
            "action",
            "kind",
            "key",
            "field",
            "old",
            "new",
        ]


# --- jobs and host tasks -----------------------------------------------------------------------
class StreamSerializer(serializers.Serializer):
    head = serializers.CharField(help_text="The start of the stream (all of it if not truncated).")
    tail = serializers.CharField(help_text="The end, set only when the middle was dropped.")
    bytes = serializers.IntegerField(help_text="The stream's true size on the host.")
    truncated = serializers.BooleanField(help_text="True when the middle was not kept.")


@extend_schema_field(StreamSerializer)
class StreamField(serializers.Field):
    """One output stream of a host task, as ``HostTask.stream()`` gives it."""

    def __init__(self, stream: str, **kwargs):
        self.stream = stream
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, task: HostTask) -> dict:
        return task.stream(self.stream)


class FetchedFileSerializer(serializers.Serializer):
    sha256 = serializers.CharField(help_text="Checked against the host's when it was stored.")
    size = serializers.IntegerField()
    download = serializers.URLField(help_text="GET it (it sends Repr-Digest: sha-256).")
    removed = serializers.DateTimeField(
        allow_null=True,
        help_text="When the server's copy was removed (CMDB_FETCH_KEEP_DAYS); null while kept.",
    )


class HostTaskSerializer(serializers.ModelSerializer):
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
            "stdout",
            "stderr",
            "file",
        ]
        read_only_fields = fields

    @extend_schema_field(FetchedFileSerializer(allow_null=True))
    def get_file(self, task: HostTask) -> dict | None:
        if not task.fetched:
            return None
        url = reverse("api:hosttask-file", kwargs={"task_id": task.task_id},
                      request=self.context.get("request"))  # fmt: skip
        return {"sha256": task.fetched["sha256"], "size": task.fetched["size"], "download": url,
                "removed": task.fetched_removed_at}  # fmt: skip


def _summary(tasks: list[HostTask]) -> dict:
    return {
        "done": all(t.is_terminal for t in tasks),
        "ok": bool(tasks) and all(t.state == State.OK for t in tasks),
        "summary": dict(Counter(t.state for t in tasks)),
    }


class JobSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:job-detail")
    done = serializers.SerializerMethodField(help_text="Every host task has ended.")
    ok = serializers.SerializerMethodField(help_text="Every host task ended ok.")
    summary = serializers.SerializerMethodField(help_text="Host tasks per state.")
    tasks = HostTaskSerializer(source="host_tasks", many=True, read_only=True)

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
            "done",
            "ok",
            "summary",
            "tasks",
        ]

    def get_done(self, job: Job) -> bool:
        return _summary(list(job.host_tasks.all()))["done"]

    def get_ok(self, job: Job) -> bool:
        return _summary(list(job.host_tasks.all()))["ok"]

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_summary(self, job: Job) -> dict:
        return _summary(list(job.host_tasks.all()))["summary"]


class SecondsField(serializers.IntegerField):
    """Optional seconds from 1 to ``maximum``. The schema states the range; the dispatcher
    checks it, with the targets, so that a request hears of every problem at once."""

    def __init__(self, maximum: int, **kwargs):
        super().__init__(required=False, allow_null=True, default=None, **kwargs)
        # Set after __init__, which would have made them validators: documented, not enforced.
        self.min_value, self.max_value = 1, maximum


class TargetsSerializer(serializers.Serializer):
    """What every dispatching request has. Targets are the union of ``hosts`` and the members of
    ``groups``, filtered by every ``where`` expression (alone, ``where`` filters all hosts)."""

    hosts = serializers.ListField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        default=list,
        help_text="IP addresses or hostnames of known hosts.",
    )
    groups = serializers.ListField(
        child=serializers.CharField(), required=False, default=list, help_text="Group names."
    )
    where = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        default=list,
        help_text="Fact filters as the CLI's --where (os=debian, disk_free_pct<10), ANDed.",
    )
    timeout = SecondsField(
        maximum=settings.CMDB["MAX_TIMEOUT"],
        help_text="Seconds the work may run on each host (default CMDB_DEFAULT_TIMEOUT).",
    )
    reach_timeout = SecondsField(
        maximum=MAX_REACH_TIMEOUT,
        help_text="Seconds an agent has to pick the task up (default CMDB_REACH_TIMEOUT).",
    )

    def validate(self, attrs):
        if not (attrs["hosts"] or attrs["groups"] or attrs["where"]):
            raise serializers.ValidationError({"hosts": [E_NO_TARGETS]})
        return attrs

    def to_request(
        self, requested_by: str, kind: str, command: str = "", params: dict | None = None
    ) -> CommandRequest:
        return CommandRequest.from_targets(
            self.validated_data, kind, requested_by, command=command, params=params
        )


class JobRequestSerializer(TargetsSerializer):
    """The body of POST /api/jobs/: a command or a fact collection."""

    # Push and fetch have their own endpoints: a push is an upload, not JSON.
    kind = serializers.ChoiceField(
        choices=[
            (k, JobKindChoices(k).label) for k in (JobKindChoices.COMMAND, JobKindChoices.COLLECT)
        ],
        default=JobKindChoices.COMMAND,
    )
    command = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="The shell command (kind command)."
    )

    def to_request(self, requested_by: str) -> CommandRequest:  # type: ignore[override]
        data = self.validated_data
        return super().to_request(requested_by, data["kind"], data["command"])


@extend_schema_field({"type": "string", "format": "binary"})
class UploadField(serializers.FileField):
    """A file in a multipart request (DRF's FileField documents a URL, as it reads back)."""


@extend_schema_field({"type": "string", "pattern": "^/", "maxLength": 4096})
class AbsolutePathField(serializers.CharField):
    default_error_messages = {"relative": "give an absolute path (it starts with /)"}

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value.startswith("/") or "\x00" in value:
            self.fail("relative")
        return value


class BatchFieldsMixin(serializers.Serializer):
    batch = serializers.IntegerField(
        required=False, min_value=1, help_text="Hosts at a time; the next batch starts when the "
        "previous one has ended.",
    )  # fmt: skip
    max_failures = serializers.IntegerField(
        required=False, min_value=0, help_text="Stop once more hosts than this have failed "
        "(the rest end cancelled).",
    )  # fmt: skip

    def batch_params(self) -> dict:
        return {k: self.validated_data[k] for k in ("batch", "max_failures")
                if self.validated_data.get(k) is not None}  # fmt: skip


class PushRequestSerializer(BatchFieldsMixin, TargetsSerializer):
    """The body of POST /api/jobs/push/ (multipart/form-data): one file, sent to every target.

    The upload is spooled to disk by the server, put once into the broker's Redis in chunks,
    and each host verifies its sha256 before renaming it into place."""

    file = UploadField(
        allow_empty_file=True,
        help_text="The file to put at dest; with archive=true, a tar (.tar, .tar.gz, .tar.bz2, "
        ".tar.xz) of a folder.",
    )
    dest = AbsolutePathField(
        max_length=4096, help_text="Absolute path on the hosts (the folder, for an archive)."
    )
    archive = serializers.BooleanField(
        default=False,
        help_text="Unpack the uploaded tar as the folder dest (checked first: no absolute paths, "
        "'..', links out of it, devices).",
    )
    mode = serializers.RegexField(
        r"^0?[0-7]{3,4}$", required=False, default=None, help_text="Octal mode, e.g. 0644."
    )
    owner = serializers.RegexField(
        r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$",
        max_length=65,
        required=False,
        default=None,
        help_text="user or user:group (applied where the agent runs as root).",
    )


class FetchRequestSerializer(TargetsSerializer):
    """The body of POST /api/jobs/fetch/: copy one file from each target to the server."""

    path = AbsolutePathField(max_length=4096, help_text="Absolute path of the file on the hosts.")


def flat_errors(errors: dict) -> dict[str, list[str]]:
    """Validation errors as field -> messages, whatever their depth: a bad item of a list
    (``hosts: {0: [...]}``) becomes "item 0: ..." under its field, as documented."""

    def messages(value, prefix: str = "") -> list[str]:
        if isinstance(value, dict):
            return [m for key, v in value.items() for m in messages(v, f"{prefix}item {key}: ")]
        if isinstance(value, list):
            return [m for v in value for m in messages(v, prefix)]
        return [f"{prefix}{value}"]

    return {field: messages(value) for field, value in errors.items()}


def dispatch_errors(by_field: dict[str, list[str]]) -> dict[str, list[str]]:
    """A DispatchError's problems keyed by the request's field names."""
    errors: dict[str, list[str]] = {}
    for name, messages in by_field.items():
        errors.setdefault(DISPATCH_FIELDS.get(name, name), []).extend(messages)
    return errors


class DispatchedTaskSerializer(serializers.ModelSerializer):
    host = serializers.IPAddressField(source="ip", protocol="IPv4")

    class Meta:
        model = HostTask
        fields = ["host", "task_id"]


class JobDispatchedSerializer(serializers.ModelSerializer):
    """What POST /api/jobs/ answers at once: where to poll the job and each host's task."""

    url = serializers.HyperlinkedIdentityField(view_name="api:job-detail")
    tasks = DispatchedTaskSerializer(source="host_tasks", many=True)

    class Meta:
        model = Job
        fields = ["id", "kind", "tasks", "url"]


# --- responses that are not resources (for the schema) -----------------------------------------
def _messages(help_text: str = "") -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), required=False,
                                 help_text=help_text or None)  # fmt: skip


class TargetErrorsSerializer(serializers.Serializer):
    """400: each field of the request that is wrong, with every reason. Nothing was sent."""

    hosts = _messages("Unknown or malformed hosts, or none matched.")
    groups = _messages()
    where = _messages()
    timeout = _messages()
    reach_timeout = _messages()
    non_field_errors = _messages("The body is not an object.")


class DispatchErrorsSerializer(TargetErrorsSerializer):
    kind = _messages()
    command = _messages()


class PushErrorsSerializer(TargetErrorsSerializer):
    file = _messages("Missing, or an archive that is unreadable or unsafe.")
    dest = _messages()
    archive = _messages()
    mode = _messages()
    owner = _messages()
    batch = _messages()
    max_failures = _messages()


class FetchErrorsSerializer(TargetErrorsSerializer):
    path = _messages()


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class BrokerDownSerializer(serializers.Serializer):
    detail = serializers.CharField()
    job = serializers.UUIDField(
        required=False, help_text="The job, recorded with its dispatch_error (not dispatched)."
    )


class CancelledSerializer(serializers.Serializer):
    cancelled = serializers.IntegerField(help_text="Unfinished host tasks asked to stop.")
