"""Hosts and host groups."""

from rest_framework import serializers

from cmdb.assets.models import HostFacts
from cmdb.hosts.models import Host, HostGroup


class IdentityURLField(serializers.HyperlinkedIdentityField):
    """HyperlinkedIdentityField that reverses its route once per serializer, not per row:
    reverse() was a fifth of a page of 1,000 hosts. Keyed by pk only, as the routes are."""

    #: Stands for the pk in the route reversed once (the router's lookups are [^/.]+).
    MARK = "-pk-"

    def get_url(self, obj, view_name, request, format):
        if format or self.lookup_field != "pk" or obj.pk is None:
            return super().get_url(obj, view_name, request, format)
        key = (view_name, id(request))
        cached = getattr(self, "_route", None)
        if cached is None or cached[0] != key:
            url = self.reverse(view_name, kwargs={"pk": self.MARK}, request=request)
            self._route = cached = (key, *url.rsplit(self.MARK, 1))
        return f"{cached[1]}{obj.pk}{cached[2]}"


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
    url = IdentityURLField(view_name="api:host-detail")
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
            "key_state",
            "key_fingerprint",
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
