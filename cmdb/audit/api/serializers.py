"""Serializers of the audit trail's API."""

from rest_framework import serializers

from cmdb.audit.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    targets_resolved = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="The IPs the targets resolved to."
    )

    class Meta:
        model = AuditEntry
        fields = ["id", "seq", "at", "username", "via", "address", "action", "outcome", "kind",
                  "command", "targets_given", "targets_resolved", "job_id", "detail",
                  "prev_hash", "hash"]  # fmt: skip
        read_only_fields = fields
