"""Hosts and host groups: read by everyone who may view them, written with model permissions
(hosts.add_host, hosts.change_hostgroup_members ...) through cmdb.hosts.inventory."""

import ipaddress
import unicodedata

from rest_framework import serializers

from cmdb.access import visible
from cmdb.assets.models import HostFacts
from cmdb.hosts.models import Host, HostGroup

E_CONTROL = "no control characters or spaces (a hostname is printed on terminals and pages)"
E_IP = "not an IPv4 address: {value!r}"
E_NO_HOST = "no host {value} (or not one you may view)"


def no_controls(value: str) -> None:
    """Names shown on terminals and pages: no control or space characters (NUL is refused
    already by DRF's CharField, and PostgreSQL would refuse it too)."""
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in value):
        raise serializers.ValidationError(E_CONTROL)


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
    """Writable: ``ip`` (changing it takes hosts.change_host_ip too) and ``hostname``."""

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
            "mode",
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
        read_only_fields = [name for name in fields if name not in ("ip", "hostname")]
        extra_kwargs = {"hostname": {"validators": [no_controls]}}


def no_controls_but_spaces(value: str) -> None:
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise serializers.ValidationError("no control characters")


class ViewableHostField(serializers.SlugRelatedField):
    """A host by IP, among those the requester may view: another is as unknown as none. The
    IP is checked before any query (a malformed one is a database error on PostgreSQL)."""

    def __init__(self, **kwargs):
        super().__init__(slug_field="ip", queryset=Host.objects.all(), **kwargs)

    def get_queryset(self):
        request = self.context.get("request")
        return visible.viewable_hosts(getattr(request, "user", None), super().get_queryset())

    def to_internal_value(self, data):
        try:
            ip = str(ipaddress.IPv4Address(str(data).strip()))
        except ValueError:
            raise serializers.ValidationError(E_IP.format(value=data)) from None
        host = self.get_queryset().filter(ip=ip).first()
        if host is None:
            raise serializers.ValidationError(E_NO_HOST.format(value=ip))
        return host


class HostGroupSerializer(serializers.ModelSerializer):
    """Writable: ``name``, ``description`` and ``hosts`` (its members you may view, by IP; the
    others stay). Changing members takes hosts.change_hostgroup_members."""

    url = serializers.HyperlinkedIdentityField(view_name="api:hostgroup-detail")
    hosts = ViewableHostField(
        many=True, required=False, help_text="IPs of the members (those you may view)."
    )

    class Meta:
        model = HostGroup
        fields = ["id", "url", "name", "description", "hosts"]
        extra_kwargs = {"description": {"validators": [no_controls_but_spaces]}}
