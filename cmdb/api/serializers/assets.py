"""Assets and changes."""

from rest_framework import serializers

from cmdb.api.serializers.hosts import NestedHostSerializer
from cmdb.assets.models import Asset, Change


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
