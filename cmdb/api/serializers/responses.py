"""Responses that are not resources, for the schema: errors by field, broker down, ..."""

from rest_framework import serializers


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
    batch = _messages()
    max_failures = _messages()
    canary = _messages()
    confirm = _messages(
        "More hosts than may be reached without confirming: the count, the ceiling, and how "
        'to confirm ("confirm": true).'
    )
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
