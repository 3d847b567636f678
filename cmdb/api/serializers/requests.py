"""The bodies of the requests that dispatch: a command or a collection, a push, a fetch."""

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from client.report import NOT_OK
from cmdb.jobs import rollout
from cmdb.jobs.choices import HostTaskStateChoices, JobKindChoices
from cmdb.jobs.services import MAX_REACH_TIMEOUT

E_NO_TARGETS = "no target hosts given (hosts, groups, where or all)"


class SecondsField(serializers.IntegerField):
    """Optional seconds from 1 to ``maximum``. The schema states the range; the dispatcher
    checks it, with the targets, so that a request hears of every problem at once."""

    def __init__(self, maximum: int, **kwargs):
        super().__init__(required=False, allow_null=True, default=None, **kwargs)
        # Set after __init__, which would have made them validators: documented, not enforced.
        self.min_value, self.max_value = 1, maximum


def _hosts_or_percent(minimum: int) -> dict:
    percent = {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}
    return {"oneOf": [{"type": "integer", "minimum": minimum}, percent], "nullable": True}


class HostsOrPercentField(serializers.Field):
    """A number of hosts, or a percentage of the job's hosts ("10%"), checked as the dispatcher
    checks it (cmdb.jobs.rollout: ``parser``, ``message``)."""

    #: What checks a value (raising ValueError), and what a refused one is told.
    parser = staticmethod(rollout.parse)
    message = 'give a number of hosts or a percentage ("10%"), not {value!r}'

    def __init__(self, **kwargs):
        super().__init__(required=False, allow_null=True, default=None, **kwargs)

    def to_internal_value(self, data):
        try:
            self.parser(data)
        except ValueError:
            raise serializers.ValidationError(self.message.format(value=data)) from None
        return data

    def to_representation(self, value):
        return value


@extend_schema_field(_hosts_or_percent(minimum=1))
class BatchField(HostsOrPercentField):
    parser, message = staticmethod(rollout.parse_batch), rollout.E_BATCH


@extend_schema_field(_hosts_or_percent(minimum=0))
class FailuresField(HostsOrPercentField):
    parser, message = staticmethod(rollout.parse_max_failures), rollout.E_MAX_FAILURES


@extend_schema_field({"type": "integer", "minimum": 1, "nullable": True})
class CanaryField(HostsOrPercentField):
    parser, message = staticmethod(rollout.parse_canary), rollout.E_CANARY


class TargetsSerializer(serializers.Serializer):
    """What every dispatching request has. Targets are the union of ``hosts`` and the members of
    ``groups``, filtered by every ``where`` expression (alone, ``where`` filters all hosts);
    sent at once, or rolling (a canary, then batches, stopped past a failure limit)."""

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
    batch = BatchField(
        help_text='Hosts at a time, or a percentage of the job\'s hosts ("10%", rounded up, '
        "at least 1); the next batch starts when the previous one has ended.",
    )
    max_failures = FailuresField(
        help_text="Stop once more hosts than this have failed, or than this percentage of the "
        "job's hosts (rounded down); the rest end cancelled, saying why. Needs batch or canary.",
    )
    canary = CanaryField(
        help_text="Send to the first N hosts alone; any failure among them stops the rest, "
        "whatever max_failures allows.",
    )
    confirm = serializers.BooleanField(
        default=False,
        help_text="Reach more hosts than may be reached without confirming (CMDB_CONFIRM_ABOVE, "
        "or the requester's grants' host ceiling); without it, such a job is a 400 naming the "
        "count and the ceiling (the field confirm), and nothing is dispatched.",
    )

    all = serializers.BooleanField(
        default=False,
        help_text="Every host you may act on (with where: every one matching), besides any other "
        "target.",
    )
    online_only = serializers.BooleanField(
        default=False,
        help_text="Leave out the targets whose agent is not online now (offline, never seen), "
        "rather than have them end unreachable after the reach timeout; the job's "
        "skipped_offline names them. A 400 when no target is online.",
    )

    def validate(self, attrs):
        if not (attrs["hosts"] or attrs["groups"] or attrs["where"] or attrs["all"]):
            raise serializers.ValidationError({"hosts": [E_NO_TARGETS]})
        return attrs


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


class PushRequestSerializer(TargetsSerializer):
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
    allow_unsafe_parents = serializers.BooleanField(
        default=False,
        help_text="Write even where a folder on the way to dest is one a non-root user can "
        "change (refused otherwise: that user could swap what root writes).",
    )


class FetchRequestSerializer(TargetsSerializer):
    """The body of POST /api/jobs/fetch/: copy one file from each target to the server."""

    path = AbsolutePathField(max_length=4096, help_text="Absolute path of the file on the hosts.")


class RerunRequestSerializer(serializers.Serializer):
    """The body of POST /api/jobs/{id}/rerun/: which of the job's hosts run it again."""

    states = serializers.ListField(
        child=serializers.ChoiceField(choices=HostTaskStateChoices.choices),
        required=False,
        default=list,
        help_text="The hosts whose task ended in one of these states (with failed: besides "
        "those); neither: every host of the job.",
    )
    failed = serializers.BooleanField(
        default=False, help_text=f"The hosts that did not end ok ({', '.join(NOT_OK)})."
    )
    online_only = serializers.BooleanField(
        default=False, help_text="Leave out the hosts whose agent is not online now."
    )
    confirm = serializers.BooleanField(
        default=False, help_text="Reach more hosts than may be reached without confirming."
    )

    def chosen_states(self) -> list[str]:
        data = self.validated_data
        return [*data["states"], *(NOT_OK if data["failed"] else ())]
