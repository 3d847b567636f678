"""API views: each ViewSet is configuration (queryset, serializer, filter set, permissions).

The exceptions are dispatch (POST /api/jobs/) and cancel, which hand over to
``cmdb.jobs.dispatch`` and turn its errors into 400 and 503 answers.
"""

import redis
from celery import states as celery_states
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django_celery_results.models import TaskResult
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from kombu.exceptions import KombuError
from rest_framework import mixins, routers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from cmdb.api import filtersets, serializers
from cmdb.api.pagination import CappedLimitOffsetPagination
from cmdb.api.permissions import ActionPermissions, DispatchPermissions
from cmdb.assets.models import Asset, Change
from cmdb.celery import app as cmdb_celery_app
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.dispatch import BrokerUnavailable, DispatchError, cancel, dispatch_command
from cmdb.jobs.models import HostTask, Job

E_CANCEL_BROKER_DOWN = "broker unreachable: {exc} (the cancel may not have reached the agents)"


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "service unavailable"
    default_code = "service_unavailable"


def with_celery_state(tasks: QuerySet) -> QuerySet:
    """Host tasks annotated with their django-celery-results status, in the same query.

    A task id without a TaskResult row yet (no report so far) is PENDING, as Celery's
    AsyncResult says of any id it has no result for.
    """
    status_of = TaskResult.objects.filter(task_id=OuterRef("task_id")).values("status")[:1]
    return tasks.annotate(celery_state=Coalesce(Subquery(status_of), Value(celery_states.PENDING)))


class APIRootView(routers.APIRootView):
    """The list of resources: for any authenticated user (it has no model to check against)."""

    permission_classes = [IsAuthenticated]


class ReadOnlyViewSet(viewsets.ReadOnlyModelViewSet):
    pagination_class = CappedLimitOffsetPagination


class CancelMixin:
    """POST {item}/cancel/: the unfinished host tasks of the item end or are stopped."""

    #: The Celery app jobs are published and revoked with (a collaborator, not a hidden global).
    celery_app = cmdb_celery_app
    action_perms = {"cancel": ["jobs.cancel_job"]}

    def tasks_to_cancel(self, item) -> list[HostTask]:
        raise NotImplementedError

    @extend_schema(
        request=None,
        responses={
            202: serializers.CancelledSerializer,
            503: OpenApiResponse(serializers.BrokerDownSerializer, "The broker is unreachable."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, *args, **kwargs):
        tasks = self.tasks_to_cancel(self.get_object())
        try:
            count = cancel(tasks, self.celery_app)
        except (KombuError, OSError, redis.RedisError) as exc:
            raise ServiceUnavailable(E_CANCEL_BROKER_DOWN.format(exc=exc)) from exc
        return Response({"cancelled": count}, status=status.HTTP_202_ACCEPTED)


# --- hosts, assets, changes --------------------------------------------------------------------
class HostViewSet(ReadOnlyViewSet):
    queryset = Host.objects.select_related("facts").prefetch_related("groups")
    serializer_class = serializers.HostSerializer
    filterset_class = filtersets.HostFilterSet


class HostGroupViewSet(ReadOnlyViewSet):
    queryset = HostGroup.objects.prefetch_related("hosts")
    serializer_class = serializers.HostGroupSerializer
    filterset_class = filtersets.HostGroupFilterSet


class AssetViewSet(ReadOnlyViewSet):
    queryset = Asset.objects.select_related("host")
    serializer_class = serializers.AssetSerializer
    filterset_class = filtersets.AssetFilterSet


class ChangeViewSet(ReadOnlyViewSet):
    queryset = Change.objects.select_related("host")
    serializer_class = serializers.ChangeSerializer
    filterset_class = filtersets.ChangeFilterSet


# --- jobs and host tasks -----------------------------------------------------------------------
@extend_schema_view(
    create=extend_schema(
        summary="Dispatch a command or a fact collection",
        description="Answers 202 at once, with the job id and each host's Celery task id; "
        "poll the job's URL (or a host task's) until `done`. Needs jobs.run_command for a "
        "command, jobs.collect_facts for a collection.",
        examples=[
            OpenApiExample(
                "Run a command",
                {"command": "df -h", "hosts": ["127.0.1.1", "127.0.1.2"], "timeout": 60},
                request_only=True,
            ),
            OpenApiExample(
                "Run by stored facts",
                {"command": "uptime", "where": ["os=debian", "disk_free_pct<10"]},
                request_only=True,
            ),
            OpenApiExample(
                "Collect facts", {"kind": "collect", "groups": ["web"]}, request_only=True
            ),
        ],
        responses={
            202: serializers.JobDispatchedSerializer,
            400: OpenApiResponse(
                serializers.DispatchErrorsSerializer,
                "Nothing was dispatched: each wrong field with its reasons.",
            ),
            503: OpenApiResponse(
                serializers.BrokerDownSerializer,
                "The broker is unreachable: the job was recorded with its dispatch_error, "
                "not dispatched.",
            ),
        },
    ),
    cancel=extend_schema(summary="Cancel the job's unfinished host tasks (jobs.cancel_job)"),
)
class JobViewSet(CancelMixin, mixins.CreateModelMixin, ReadOnlyViewSet):
    queryset = Job.objects.prefetch_related(
        Prefetch("host_tasks", queryset=with_celery_state(HostTask.objects.order_by("ip")))
    )
    serializer_class = serializers.JobSerializer
    filterset_class = filtersets.JobFilterSet
    permission_classes = [DispatchPermissions]

    def get_serializer_class(self):
        if self.action == "create":
            return serializers.JobRequestSerializer
        return super().get_serializer_class()

    def create(self, request, *args, **kwargs):
        body = self.get_serializer(data=request.data)
        if not body.is_valid():
            raise ValidationError(serializers.flat_errors(body.errors))
        try:
            job = dispatch_command(body.to_request(request.user.get_username()), self.celery_app)
        except DispatchError as exc:
            raise ValidationError(serializers.dispatch_errors(exc.by_field)) from None
        except BrokerUnavailable as exc:
            raise ServiceUnavailable({"detail": str(exc), "job": str(exc.job.pk)}) from exc
        answer = serializers.JobDispatchedSerializer(job, context=self.get_serializer_context())
        return Response(answer.data, status=status.HTTP_202_ACCEPTED)

    def tasks_to_cancel(self, job: Job) -> list[HostTask]:
        return list(job.host_tasks.all())


@extend_schema_view(
    cancel=extend_schema(summary="Cancel this host task if unfinished (jobs.cancel_job)"),
)
class HostTaskViewSet(CancelMixin, ReadOnlyViewSet):
    queryset = with_celery_state(HostTask.objects.all())
    serializer_class = serializers.HostTaskSerializer
    filterset_class = filtersets.HostTaskFilterSet
    permission_classes = [ActionPermissions]
    #: Polled by the Celery task id that `run`, the API and the admin print per host.
    lookup_field = "task_id"

    def tasks_to_cancel(self, task: HostTask) -> list[HostTask]:
        return [task]
