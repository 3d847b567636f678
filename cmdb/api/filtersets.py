"""Filter sets for the API lists (django-filter): a bad value is a 400 naming its parameter."""

import re
from datetime import UTC, datetime

import django_filters as filters
from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field

from cmdb.access import visible
from cmdb.assets.choices import AssetKindChoices, ChangeActionChoices
from cmdb.assets.management.commands.changes import parse_since
from cmdb.assets.models import Asset, Change
from cmdb.assets.where import parse_all as parse_where
from cmdb.hosts.choices import AgentStatusChoices
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.choices import HostTaskStateChoices, JobKindChoices
from cmdb.jobs.models import HostTask, Job

E_NUL = "NUL characters are not allowed"
E_MOMENT = "expected an ISO 8601 time (2026-05-01T12:00:00Z) or an age like 30m, 12h, 7d, 2w"
#: The largest id a BigAutoField holds (and SQLite's INTEGER).
MAX_ID = 2**63 - 1
AGE = re.compile(r"^\s*\d+\s*[smhdw]\s*$")


# --- fields ------------------------------------------------------------------------------------
class ExpressionsField(forms.Field):
    """A repeatable parameter of ``--where`` expressions (``?where=os=debian&where=...``)."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[str]:
        if not value:
            return []
        values = [value] if isinstance(value, str) else list(value)
        if any("\x00" in v for v in values):
            raise forms.ValidationError(E_NUL)
        return [v for v in values if v.strip()]

    def validate(self, value):
        super().validate(value)
        _, problems = parse_where(value)
        if problems:
            # Through params: django-filter %-formats every message, and expressions may hold %.
            raise forms.ValidationError(
                [forms.ValidationError("%(problem)s", params={"problem": p}) for p in problems]
            )


class MomentField(forms.CharField):
    """A point in time: ISO 8601 (naive means UTC) or an age back from now, as the CLI's
    ``changes --since 7d``."""

    def to_python(self, value) -> datetime | None:
        value = super().to_python(value)
        if not value:
            return None
        try:
            if AGE.match(value):
                return timezone.now() - parse_since(value.replace(" ", ""))
            moment = parse_datetime(value)
            if moment is not None:
                # In UTC here, as the database gets it: 0001-01-01T00:00+01:00 is before year 1.
                moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            # An impossible date (month 13), or a time before year 1 or after 9999.
            moment = None
        if moment is None:
            raise forms.ValidationError(E_MOMENT)
        return moment


# --- filters -----------------------------------------------------------------------------------
E_WHERE_HELP = (
    "fact filter as the CLI's --where: FIELD OP VALUE with OP one of = != < <= > >= ~ "
    "(e.g. os=debian, disk_free_pct<10, cpu_model~xeon); repeatable, ANDed"
)


@extend_schema_field({"type": "array", "items": {"type": "string"}, "description": E_WHERE_HELP})
class WhereFilter(filters.Filter):
    """Stored-fact expressions as ``manage.py ... --where`` takes them, ANDed."""

    field_class = ExpressionsField

    def filter(self, qs, value):
        if not value:
            return qs
        q, _ = parse_where(value)
        # Expressions on groups join: a host in two matching groups must come once.
        return qs.filter(q).distinct()


class IPFilter(filters.CharFilter):
    """An IPv4 address; a malformed one is a 400, not a database error (PostgreSQL's inet)."""

    field_class = forms.GenericIPAddressField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("protocol", "IPv4")
        super().__init__(*args, **kwargs)


@extend_schema_field({"type": "string", "description": E_MOMENT})
class MomentFilter(filters.Filter):
    field_class = MomentField


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(filters.NumberFilter):
    """A row id: out of the database's range is a 400, not an OverflowError."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


def fact_filter(name: str, lookup: str = "iexact") -> filters.CharFilter:
    return filters.CharFilter(
        field_name=f"facts__{name}",
        lookup_expr=lookup,
        label=f"stored fact {name} ({'contains' if lookup == 'icontains' else 'equals'}, any case)",
    )


# --- filter sets -------------------------------------------------------------------------------
class HostFilterSet(filters.FilterSet):
    ip = IPFilter(label="IP address")
    hostname = filters.CharFilter(lookup_expr="iexact", label="hostname (any case)")
    group = filters.CharFilter(field_name="groups__name", label="name of a group it belongs to")
    status = filters.ChoiceFilter(
        field_name="agent_status", choices=AgentStatusChoices.choices, label="agent status"
    )
    os = fact_filter("os")
    os_version = fact_filter("os_version")
    kernel = fact_filter("kernel")
    arch = fact_filter("arch")
    fqdn = fact_filter("fqdn")
    cpu_model = fact_filter("cpu_model", "icontains")
    vendor = fact_filter("vendor")
    product = fact_filter("product")
    serial = fact_filter("serial")
    where = WhereFilter(label=E_WHERE_HELP)

    class Meta:
        model = Host
        fields: list[str] = []


class HostGroupFilterSet(filters.FilterSet):
    name = filters.CharFilter(label="group name")

    class Meta:
        model = HostGroup
        fields: list[str] = []


class HostScopedFilterSet(filters.FilterSet):
    """The host filters assets and changes share: by IP or by id."""

    host = IPFilter(field_name="host__ip", label="IP address of the host")
    host_id = IdFilter(field_name="host_id", label="id of the host")


class AssetFilterSet(HostScopedFilterSet):
    kind = filters.ChoiceFilter(choices=AssetKindChoices.choices)
    key = filters.CharFilter(label="key (disk serial or name, NIC MAC, mount point ...)")

    class Meta:
        model = Asset
        fields: list[str] = []


class ChangeFilterSet(HostScopedFilterSet):
    kind = filters.ChoiceFilter(choices=AssetKindChoices.choices, label="asset kind")
    action = filters.ChoiceFilter(choices=ChangeActionChoices.choices)
    job = filters.UUIDFilter(field_name="job_id", label="the collection job that found it")
    since = MomentFilter(field_name="time", lookup_expr="gte", label="at or after")
    until = MomentFilter(field_name="time", lookup_expr="lt", label="before")

    class Meta:
        model = Change
        fields: list[str] = []


class JobFilterSet(filters.FilterSet):
    kind = filters.ChoiceFilter(choices=JobKindChoices.choices)
    requested_by = filters.CharFilter(label="who asked (a username, cli:USER, agent start ...)")
    since = MomentFilter(field_name="created", lookup_expr="gte", label="created at or after")
    until = MomentFilter(field_name="created", lookup_expr="lt", label="created before")
    state = filters.MultipleChoiceFilter(
        choices=HostTaskStateChoices.choices, method="with_a_host_in",
        label="only jobs with a host task (of those you may view) in this state (repeatable)",
    )  # fmt: skip

    class Meta:
        model = Job
        fields: list[str] = []

    def with_a_host_in(self, queryset, name, value):
        # As `manage.py jobs --state` (cmdb.jobs.listing.recent): a host one may not view
        # does not make its job match, nor show that it is in that state.
        if not value:
            return queryset
        tasks = HostTask.objects.filter(state__in=list(value))
        shown = visible.viewable_tasks(self.request.user, tasks)
        return queryset.filter(pk__in=shown.values("job_id"))


class HostTaskFilterSet(filters.FilterSet):
    job = filters.UUIDFilter(field_name="job_id", label="job id")
    host = IPFilter(field_name="ip", label="IP address the task was sent to")
    state = filters.ChoiceFilter(choices=HostTaskStateChoices.choices)

    class Meta:
        model = HostTask
        fields: list[str] = []
