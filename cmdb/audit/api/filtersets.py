"""Filters of /api/audit/."""

import django_filters as filters

from cmdb.api.filtersets import IPFilter, MomentFilter
from cmdb.audit.choices import VIA_CHOICES, AuditActionChoices, AuditOutcomeChoices
from cmdb.audit.models import AuditEntry


class AuditEntryFilterSet(filters.FilterSet):
    username = filters.CharFilter(label="who (a username; empty: the server itself)")
    action = filters.ChoiceFilter(choices=AuditActionChoices.choices)
    via = filters.ChoiceFilter(choices=VIA_CHOICES, label="front-end")
    outcome = filters.ChoiceFilter(choices=AuditOutcomeChoices.choices)
    host = IPFilter(method="filter_host", label="IP address among the resolved targets")
    job = filters.UUIDFilter(field_name="job_id", label="job id")
    since = MomentFilter(field_name="at", lookup_expr="gte", label="at or after")
    until = MomentFilter(field_name="at", lookup_expr="lt", label="before")
    search = filters.CharFilter(field_name="command", lookup_expr="icontains",
                                label="text in the command (any case)")  # fmt: skip

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def filter_host(self, queryset, name, value):
        # The spaces around it: 10.0.0.1 must not match 10.0.0.10 (hosts is " ip ip ").
        return queryset.filter(hosts__contains=f" {value} ")
