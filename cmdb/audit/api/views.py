"""GET /api/audit/ and /api/audit/{id}/: for users with audit.view_auditentry."""

from rest_framework import viewsets

from cmdb.api.pagination import CappedLimitOffsetPagination
from cmdb.api.permissions import ModelPermissions
from cmdb.audit.api.filtersets import AuditEntryFilterSet
from cmdb.audit.api.serializers import AuditEntrySerializer
from cmdb.audit.models import AuditEntry

VIEW = ["%(app_label)s.view_%(model_name)s"]


class AuditPermissions(ModelPermissions):
    """Reading needs audit.view_auditentry. So does being told a write is not allowed: who
    may read gets 405 for POST, PUT, PATCH and DELETE (nobody may write), anyone else 403."""

    perms_map = {**ModelPermissions.perms_map,
                 **{method: VIEW for method in ("POST", "PUT", "PATCH", "DELETE")}}  # fmt: skip


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilterSet
    permission_classes = [AuditPermissions]
    pagination_class = CappedLimitOffsetPagination
