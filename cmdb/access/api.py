"""GET/POST /api/grants/, GET/DELETE /api/grants/{id}/: grants, with the access app's model
permissions (view, add, delete). A grant is changed by removing it and adding another: both
are in the audit trail, and nobody reads a half-changed one."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from cmdb.access import services
from cmdb.access.models import Action, Grant
from cmdb.api.pagination import CappedLimitOffsetPagination
from cmdb.api.permissions import ModelPermissions
from cmdb.hosts.models import HostGroup


class NameField(serializers.SlugRelatedField):
    """A row by its name; a name no row can have (not text, a NUL, too long) is the usual "does
    not exist" without a query: PostgreSQL refuses a NUL in text with an error of its own."""

    def to_internal_value(self, data):
        if not isinstance(data, str) or "\x00" in data or len(data) > 150:
            self.fail("does_not_exist", slug_name=self.slug_field, value=str(data)[:150])
        return super().to_internal_value(data)


class GrantSerializer(serializers.ModelSerializer):
    users = NameField(
        many=True, slug_field="username", required=False,
        queryset=get_user_model().objects.all(),
        help_text="usernames the grant is for",
    )  # fmt: skip
    groups = NameField(
        many=True, slug_field="name", required=False, queryset=Group.objects.all(),
        help_text="Django groups of users the grant is for",
    )  # fmt: skip
    host_groups = NameField(
        many=True, slug_field="name", required=False, queryset=HostGroup.objects.all(),
        help_text="host groups the grant covers (or all_hosts)",
    )  # fmt: skip
    actions = serializers.ListField(child=serializers.ChoiceField(Action.choices))
    where = serializers.ListField(child=serializers.CharField(max_length=500), required=False,
                                  help_text="fact expressions hosts must match too")  # fmt: skip
    text = serializers.CharField(source="__str__", read_only=True)

    class Meta:
        model = Grant
        fields = ["id", "users", "groups", "actions", "all_hosts", "host_groups", "where",
                  "max_hosts", "note", "created", "text"]  # fmt: skip
        read_only_fields = ["created"]


class GrantViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin,
                   viewsets.ReadOnlyModelViewSet):  # fmt: skip
    queryset = Grant.objects.prefetch_related("users", "groups", "host_groups")
    serializer_class = GrantSerializer
    permission_classes = [ModelPermissions]
    pagination_class = CappedLimitOffsetPagination

    def create(self, request, *args, **kwargs):
        given = self.get_serializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        # The service checks it as the CLI's is checked (actions, hosts, expressions) and
        # records it in the audit trail.
        grant = services.create(
            [u.get_username() for u in data.get("users", [])],
            [g.name for g in data.get("groups", [])],
            data["actions"], [g.name for g in data.get("host_groups", [])],
            data.get("all_hosts", False), data.get("where", []), data.get("max_hosts"),
            data.get("note", ""),
        )  # fmt: skip
        return Response(self.get_serializer(grant).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        services.remove(self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
