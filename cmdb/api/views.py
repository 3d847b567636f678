"""API views: each ViewSet is configuration (queryset, serializer, filter set, permissions).

The exceptions are dispatch (POST /api/jobs/) and cancel, which hand over to
``cmdb.jobs.dispatch`` and turn its errors into 400 and 503 answers.
"""

import base64
import json
import logging
import os
from dataclasses import replace

import redis
from celery import states as celery_states
from django.conf import settings
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import FileResponse, JsonResponse, StreamingHttpResponse
from django.views.defaults import page_not_found
from django_celery_results.models import TaskResult
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from kombu.exceptions import KombuError
from rest_framework import mixins, routers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from cmdb.api import filtersets, serializers
from cmdb.api.pagination import CappedLimitOffsetPagination
from cmdb.api.permissions import ActionPermissions, DispatchPermissions
from cmdb.assets.models import Asset, Change
from cmdb.celery import app as cmdb_celery_app
from cmdb.files.fetched import NotServed, open_fetched, tar_stream
from cmdb.files.uploads import prepare_upload
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.dispatch import (
    BrokerUnavailable,
    CommandRequest,
    DispatchError,
    cancel,
    check_request,
    dispatch_command,
)
from cmdb.jobs.models import HostTask, Job
from cmdb.jobs.signer import SigningKeyError
from wire.blobs import TransferError

logger = logging.getLogger(__name__)

E_CANNOT_SIGN = "nothing dispatched: this server cannot sign messages for agents: {exc}"
E_TOO_LARGE = "nothing pushed: the file is larger than CMDB_MAX_UPLOAD_BYTES ({limit} bytes)"
#: Room for the multipart framing and the other fields around the file.
MULTIPART_SLACK = 1 << 20
E_UPLOAD_FAILED = "nothing pushed: the file could not be put in the broker: {exc}"
E_NO_FILE = "this host task has no fetched file (a fetch job's, once stored; it is {state})"
E_NO_FILES = "this job has no fetched files on the server (a fetch job's, once stored)"
E_FILE_GONE = "the server's copy of this file was removed"
E_CANCEL_BROKER_DOWN = "broker unreachable: {exc} (the cancel may not have reached the agents)"


class Gone(APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "gone"
    default_code = "gone"


class BinaryRenderer(BaseRenderer):
    """Lets a client ask for application/octet-stream (a download); errors still read as JSON."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request too large"
    default_code = "too_large"


class TarRenderer(BinaryRenderer):
    media_type = "application/x-tar"
    format = "tar"


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "service unavailable"
    default_code = "service_unavailable"


def not_found(request, exception):
    """handler404: under /api/, a URL that matches no route (an id of the wrong shape) is a
    JSON 404 like every other API error, not Django's HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)


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
    push=extend_schema(
        summary="Push a file, or a folder as a tar, to hosts (jobs.run_command)",
        description="A multipart upload. The server spools it to disk, puts it once into the "
        "broker's Redis in 1 MiB chunks, and each host writes it beside dest, checks its "
        "sha256, and renames it into place: per host verified, skipped (already equal) or "
        "failed (why). Answers 202 at once, as POST /api/jobs/ does.",
        request={"multipart/form-data": serializers.PushRequestSerializer},
        responses={
            202: serializers.JobDispatchedSerializer,
            400: OpenApiResponse(
                serializers.PushErrorsSerializer,
                "Nothing was sent: each wrong field with its reasons.",
            ),
            413: OpenApiResponse(
                serializers.DetailSerializer,
                "Larger than CMDB_MAX_UPLOAD_BYTES (the file, or the archive unpacked).",
            ),
            503: OpenApiResponse(
                serializers.BrokerDownSerializer,
                "The broker is unreachable: nothing was pushed.",
            ),
        },
    ),
    fetch=extend_schema(
        summary="Fetch a file from each host to the server (jobs.run_command)",
        description="Each host's copy is verified and kept on the server; a host task's `file` "
        "then gives its sha256 and its download URL.",
        request=serializers.FetchRequestSerializer,
        examples=[
            OpenApiExample(
                "Fetch a log",
                {"path": "/var/log/syslog", "hosts": ["127.0.1.1", "127.0.1.2"]},
                request_only=True,
            )
        ],
        responses={
            202: serializers.JobDispatchedSerializer,
            400: OpenApiResponse(
                serializers.FetchErrorsSerializer,
                "Nothing was dispatched: each wrong field with its reasons.",
            ),
            503: OpenApiResponse(
                serializers.BrokerDownSerializer,
                "The broker is unreachable: the job was recorded with its dispatch_error.",
            ),
        },
    ),
    files=extend_schema(
        summary="Download every file a fetch job brought back, as one tar",
        description="Members are <ip>/<name>, plus SHA256SUMS (`sha256sum -c SHA256SUMS` in "
        "the unpacked folder checks each copy). Made as it is sent, in 1 MiB pieces.",
        responses={
            (200, "application/x-tar"): OpenApiResponse(OpenApiTypes.BINARY, "The tar."),
            404: OpenApiResponse(
                serializers.DetailSerializer, "No such job, or no fetched file is kept."
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

    #: Pushing or fetching any file as the agent's user is as strong as running a command.
    #: The files are the host tasks' output: reading them takes what reading those takes.
    action_perms = {**CancelMixin.action_perms,
                    "push": ["jobs.run_command"], "fetch": ["jobs.run_command"],
                    "files": ["jobs.view_job", "jobs.view_hosttask"]}  # fmt: skip
    request_serializers = {
        "create": serializers.JobRequestSerializer,
        "push": serializers.PushRequestSerializer,
        "fetch": serializers.FetchRequestSerializer,
    }

    def get_serializer_class(self):
        return self.request_serializers.get(self.action) or super().get_serializer_class()

    def create(self, request, *args, **kwargs):
        body = self._valid(request)
        return self._dispatch(body.to_request(request.user.get_username()))

    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def push(self, request, *args, **kwargs):
        limit = settings.CMDB["MAX_UPLOAD_BYTES"]
        # Before the body is read (and spooled to disk), when the client said how big it is.
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + MULTIPART_SLACK:
            raise PayloadTooLarge(E_TOO_LARGE.format(limit=limit))
        body = self._valid(request)
        data = body.validated_data
        if data["file"].size > limit:
            raise PayloadTooLarge(E_TOO_LARGE.format(limit=limit))
        job_request = body.to_request(request.user.get_username(), JobKindChoices.PUSH)
        # Targets first: an upload of hundreds of MB for a mistyped host would be for nothing.
        self._checked(job_request)
        upload = data["file"]
        try:
            params = prepare_upload(
                self.celery_app, upload, upload.name, data["dest"], data["mode"], data["owner"],
                archive=data["archive"], max_bytes=limit,
            )  # fmt: skip
        except TransferError as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        except (KombuError, OSError, redis.RedisError) as exc:
            raise ServiceUnavailable(E_UPLOAD_FAILED.format(exc=exc)) from exc
        finally:
            upload.close()  # a large upload's spool file goes now, not at garbage collection
        return self._dispatch(replace(job_request, params={**params, **body.batch_params()}))

    @action(detail=False, methods=["post"])
    def fetch(self, request, *args, **kwargs):
        body = self._valid(request)
        params = {"agent": {"path": body.validated_data["path"]}}
        return self._dispatch(
            body.to_request(request.user.get_username(), JobKindChoices.FETCH, params=params)
        )

    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, TarRenderer])
    def files(self, request, *args, **kwargs):
        job = self.get_object()
        kept = [t for t in job.host_tasks.all() if t.fetched and "path" in t.fetched
                and t.fetched_removed_at is None]  # fmt: skip
        if not kept:
            raise NotFound(E_NO_FILES)
        response = StreamingHttpResponse(tar_stream(self._fetched_files(kept)),
                                         content_type="application/x-tar")  # fmt: skip
        response["Content-Disposition"] = f'attachment; filename="job-{job.pk}-files.tar"'
        return response

    @staticmethod
    def _fetched_files(tasks: list[HostTask]):
        """(name, open file) per host, opened one at a time as the tar is sent, then
        SHA256SUMS of those sent (`sha256sum -c SHA256SUMS` in the unpacked folder)."""
        sums = []
        for task in tasks:
            name = f"{task.ip}/{os.path.basename(task.fetched['path'])}"
            try:
                f = open_fetched(task.fetched, settings.CMDB["FETCH_DIR"])
            except (NotServed, OSError) as exc:  # removed or changed since: left out
                logger.warning("%s not put in the tar: %s", name, exc)
                continue
            sums.append(f"{task.fetched['sha256']}  {name}\n")
            yield name, f
        yield "SHA256SUMS", "".join(sums).encode()

    def _valid(self, request):
        body = self.get_serializer(data=request.data)
        if not body.is_valid():
            raise ValidationError(serializers.flat_errors(body.errors))
        return body

    @staticmethod
    def _checked(job_request: CommandRequest) -> None:
        try:
            check_request(job_request)
        except DispatchError as exc:
            raise ValidationError(serializers.dispatch_errors(exc.by_field)) from None
        except SigningKeyError as exc:
            raise ServiceUnavailable(E_CANNOT_SIGN.format(exc=exc)) from None

    def _dispatch(self, job_request: CommandRequest) -> Response:
        try:
            job = dispatch_command(job_request, self.celery_app)
        except DispatchError as exc:
            raise ValidationError(serializers.dispatch_errors(exc.by_field)) from None
        except SigningKeyError as exc:
            # The server's own configuration, not the request: nothing was recorded or sent.
            raise ServiceUnavailable(E_CANNOT_SIGN.format(exc=exc)) from None
        except BrokerUnavailable as exc:
            raise ServiceUnavailable({"detail": str(exc), "job": str(exc.job.pk)}) from exc
        answer = serializers.JobDispatchedSerializer(job, context=self.get_serializer_context())
        return Response(answer.data, status=status.HTTP_202_ACCEPTED)

    def tasks_to_cancel(self, job: Job) -> list[HostTask]:
        return list(job.host_tasks.all())


@extend_schema_view(
    cancel=extend_schema(summary="Cancel this host task if unfinished (jobs.cancel_job)"),
    file=extend_schema(
        summary="Download the file a fetch brought back from this host",
        description="The bytes the host sent, checked against its sha256 when stored; the "
        "Repr-Digest header (RFC 9530) carries that sha256 for the client to check.",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, "The file, as an attachment named <ip>-<name>."
            ),
            404: OpenApiResponse(
                serializers.DetailSerializer, "No such host task, or it has no fetched file."
            ),
            410: OpenApiResponse(serializers.DetailSerializer, "The server's copy was removed."),
        },
    ),
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

    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, BinaryRenderer])
    def file(self, request, *args, **kwargs):
        task = self.get_object()
        if not task.fetched or "path" not in task.fetched:
            raise NotFound(E_NO_FILE.format(state=task.state))
        if task.fetched_removed_at is not None:
            raise Gone(E_FILE_GONE)
        try:
            f = open_fetched(task.fetched, settings.CMDB["FETCH_DIR"])
        except FileNotFoundError:
            raise Gone(E_FILE_GONE) from None
        except NotServed as exc:
            raise NotFound(str(exc)) from None
        name = f"{task.ip}-{os.path.basename(task.fetched['path'])}"
        response = FileResponse(f, as_attachment=True, filename=name)
        digest = base64.b64encode(bytes.fromhex(task.fetched["sha256"])).decode()
        # RFC 9530: the client can check what it got against what the host had.
        response["Repr-Digest"] = f"sha-256=:{digest}:"
        response["ETag"] = f'"{task.fetched["sha256"]}"'
        return response
