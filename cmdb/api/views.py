"""API views: each ViewSet is configuration (queryset, serializer, filter set, permissions).

The exceptions are the actions, which parse the request and call the service layer
(cmdb.jobs.services); its errors become status codes in one place (cmdb.api.errors). Every
queryset is narrowed to what the requester may view (cmdb.access.visible): the rest is 404.
"""

import base64
import contextlib
import logging
import os
import uuid

from django.conf import settings
from django.http import FileResponse, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, routers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from client.report import NOT_OK
from cmdb.access import visible
from cmdb.access.actor import actor_of
from cmdb.api import filtersets, live, serializers
from cmdb.api.errors import Gone, flat_errors
from cmdb.api.pagination import CappedLimitOffsetPagination
from cmdb.api.permissions import ActionPermissions, DispatchPermissions, GroupPermissions
from cmdb.api.renderers import (
    BinaryRenderer,
    CSVRenderer,
    EventStreamRenderer,
    JSONLinesRenderer,
    TarRenderer,
)
from cmdb.assets.models import Asset, Change
from cmdb.celery import app as cmdb_celery_app
from cmdb.files.fetched import NotServed, open_fetched, record_download, tar_stream
from cmdb.hosts import inventory, keys
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs import report, services
from cmdb.jobs.choices import HostTaskStateChoices, JobKindChoices
from cmdb.jobs.models import E_AMBIGUOUS, MAX_CANDIDATES, HostTask, Job, id_prefix
from cmdb.jobs.services import Targets, Upload

logger = logging.getLogger(__name__)

E_NO_FILE = "this host task has no fetched file (a fetch job's, once stored; it is {state})"
E_NO_FILES = "this job has no fetched files on the server (a fetch job's, once stored)"
E_FILE_GONE = "the server's copy of this file was removed"
E_NO_STATE = "no host task state {states}: give one of {known}"


#: The filters of a job's host tasks (its tasks and export).
TASK_FILTERS = [
    OpenApiParameter("state", str, many=True, enum=HostTaskStateChoices.values,
                     description="Only the host tasks in these states."),
    OpenApiParameter("failed", bool, description="Only those that did not end ok."),
]  # fmt: skip


class APIRootView(routers.APIRootView):
    """The list of resources: for any authenticated user (it has no model to check against)."""

    permission_classes = [IsAuthenticated]


class ReadOnlyViewSet(viewsets.ReadOnlyModelViewSet):
    pagination_class = CappedLimitOffsetPagination

    #: ``viewable(user, queryset)``: the queryset narrowed to what the user may view
    #: (cmdb.access.visible); what it leaves out is 404 as a detail.
    viewable = None

    def get_queryset(self):
        return self.viewable(self.request.user, super().get_queryset())


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
        count = services.cancel(self.tasks_to_cancel(self.get_object()), self.celery_app,
                                actor_of(request))  # fmt: skip
        return Response({"cancelled": count}, status=status.HTTP_202_ACCEPTED)


# --- hosts, assets, changes --------------------------------------------------------------------
def _key_action(verb: str):
    """POST /api/hosts/{id}/{verb}-key/: as `manage.py keys {verb}` (hosts.manage_keys)."""

    def act(self, request, *args, **kwargs):
        host = self.get_object()
        getattr(keys, verb)([host.ip])
        host.refresh_from_db()
        return Response(self.get_serializer(host).data)

    # Named before it is decorated: DRF routes the action to the method by this name.
    act.__name__ = f"{verb}_key"
    summary = f"{verb.capitalize()} the agent key of this host (hosts.manage_keys)"
    schema = extend_schema(request=None, responses={200: serializers.HostSerializer},
                           summary=summary)  # fmt: skip
    return schema(action(detail=True, methods=["post"], url_path=f"{verb}-key")(act))


class WritableMixin(mixins.CreateModelMixin, mixins.UpdateModelMixin, mixins.DestroyModelMixin):
    """POST, PATCH and DELETE through the inventory service (cmdb.hosts.inventory), which
    audits each change; with the model's add, change and delete permissions. PUT is not
    offered: a full replacement of a host would reset what its agent reported."""

    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    #: ``inventory`` functions: (create, update, destroy).
    add = change = remove = None

    def perform_create(self, serializer):
        with not_allowed_as_403():
            serializer.instance = type(self).add(actor_of(self.request),
                                                 **serializer.validated_data)  # fmt: skip

    def perform_update(self, serializer):
        with not_allowed_as_403():
            serializer.instance = type(self).change(actor_of(self.request), serializer.instance,
                                                    **serializer.validated_data)  # fmt: skip

    def perform_destroy(self, instance):
        with not_allowed_as_403():
            type(self).remove(actor_of(self.request), instance)

    def update(self, request, *args, **kwargs):
        return self._shown(super().update(request, *args, **kwargs))

    def create(self, request, *args, **kwargs):
        return self._shown(super().create(request, *args, **kwargs))

    def _shown(self, answer: Response) -> Response:
        """The item read again as a GET shows it (the members one may view, the facts); one
        the requester may not view (a host outside their grants) as it was written."""
        instance = self.get_queryset().filter(pk=answer.data["id"]).first()
        if instance is not None:
            answer.data = self.get_serializer(instance).data
        return answer


@contextlib.contextmanager
def not_allowed_as_403():
    try:
        yield
    except inventory.NotAllowed as exc:
        raise PermissionDenied({exc.field: [str(exc)]}) from None


@extend_schema_view(
    create=extend_schema(summary="Add a host (hosts.add_host)"),
    partial_update=extend_schema(
        summary="Change a host's hostname (hosts.change_host) or IP (hosts.change_host_ip too)"
    ),
    destroy=extend_schema(summary="Remove a host; its job history stays (hosts.delete_host)"),
)
class HostViewSet(WritableMixin, ReadOnlyViewSet):
    add = staticmethod(inventory.add_host)
    change = staticmethod(inventory.change_host)
    remove = staticmethod(inventory.remove_host)
    queryset = Host.objects.select_related("facts").prefetch_related("groups")
    viewable = staticmethod(visible.viewable_hosts)
    serializer_class = serializers.HostSerializer
    filterset_class = filtersets.HostFilterSet
    permission_classes = [ActionPermissions]
    action_perms = {f"{verb}_key": ["hosts.manage_keys"] for verb in ("accept", "reject", "delete")}
    accept_key = _key_action("accept")
    reject_key = _key_action("reject")
    delete_key = _key_action("delete")


@extend_schema_view(
    create=extend_schema(summary="Add a host group (hosts.add_hostgroup; members: "
                         "hosts.change_hostgroup_members)"),
    partial_update=extend_schema(summary="Rename a group, describe it (hosts.change_hostgroup) "
                                 "or set its members (hosts.change_hostgroup_members)"),
    destroy=extend_schema(summary="Remove a host group; its hosts stay (hosts.delete_hostgroup)"),
)  # fmt: skip
class HostGroupViewSet(WritableMixin, ReadOnlyViewSet):
    """Every group is listed (a name shows no host), with only the members one may view: no
    count of the others, which would tell of hosts outside one's grants."""

    permission_classes = [GroupPermissions]
    add = staticmethod(inventory.add_group)
    change = staticmethod(inventory.change_group)
    remove = staticmethod(inventory.remove_group)

    queryset = HostGroup.objects.all()
    viewable = staticmethod(visible.with_viewable_members)
    serializer_class = serializers.HostGroupSerializer
    filterset_class = filtersets.HostGroupFilterSet


class AssetViewSet(ReadOnlyViewSet):
    queryset = Asset.objects.select_related("host")
    viewable = staticmethod(visible.on_viewable_hosts)
    serializer_class = serializers.AssetSerializer
    filterset_class = filtersets.AssetFilterSet


class ChangeViewSet(ReadOnlyViewSet):
    queryset = Change.objects.select_related("host")
    viewable = staticmethod(visible.on_viewable_hosts)
    serializer_class = serializers.ChangeSerializer
    filterset_class = filtersets.ChangeFilterSet


# --- jobs and host tasks -----------------------------------------------------------------------
@extend_schema_view(
    create=extend_schema(
        summary="Dispatch a command or a fact collection",
        description="Answers 202 at once, with the job id and each host's Celery task id; "
        "poll the job's URL (or a host task's) until `done`. Needs jobs.run_command for a "
        "command, jobs.collect_facts for a collection. Rolling: `canary` hosts first, then "
        "`batch` at a time, the rest cancelled past `max_failures` (numbers or percentages). "
        "More hosts than CMDB_CONFIRM_ABOVE (or the requester's grants' ceiling) need "
        '`"confirm": true`.',
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
            OpenApiExample(
                "A rolling restart, confirmed",
                {
                    "command": "systemctl restart app",
                    "groups": ["web"],
                    "canary": 1,
                    "batch": "10%",
                    "max_failures": "5%",
                    "confirm": True,
                },
                request_only=True,
            ),
        ],
        responses={
            202: serializers.JobDispatchedSerializer,
            400: OpenApiResponse(
                serializers.DispatchErrorsSerializer,
                "Nothing was dispatched: each wrong field with its reasons (`confirm`: more "
                "hosts than may be reached without confirming).",
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
    export=extend_schema(
        summary="The job's host tasks as CSV or JSON lines, one per host, by IP",
        description="?format=csv (the default) or ?format=jsonl; ?state= and ?failed= as for "
        "tasks. Those on hosts you may view; their output with jobs.view_output (else empty).",
        parameters=[*TASK_FILTERS, OpenApiParameter("format", str, enum=["csv", "jsonl"])],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, "A header, then a row per host."),
            (200, "application/jsonl"): OpenApiResponse(OpenApiTypes.STR, "An object per line."),
        },
    ),
    rerun=extend_schema(
        summary="Run the job again on its hosts in the states given, as a new job",
        description="The same command (or collection, or fetch) with the same timeouts; your "
        "permissions and grants decide, as for POST /api/jobs/. A push is not re-run (400).",
        request=serializers.RerunRequestSerializer,
        responses={
            202: serializers.JobDispatchedSerializer,
            400: OpenApiResponse(serializers.DispatchErrorsSerializer, "Refused."),
            403: OpenApiResponse(serializers.DetailSerializer, "Not permitted."),
            404: OpenApiResponse(serializers.DetailSerializer, "No such job."),
        },
    ),
)
class JobViewSet(CancelMixin, mixins.CreateModelMixin, ReadOnlyViewSet):
    queryset = Job.objects.all()
    serializer_class = serializers.JobSerializer
    filterset_class = filtersets.JobFilterSet
    permission_classes = [DispatchPermissions]

    #: Pushing or fetching any file as the agent's user is as strong as running a command.
    #: The files are the host tasks' output: reading them takes what reading those takes.
    action_perms = {**CancelMixin.action_perms,
                    "push": ["jobs.run_command"], "fetch": ["jobs.run_command"],
                    "files": ["jobs.view_job", "jobs.view_output"],
                    # Re-running is dispatching: the service checks the kind's permission
                    # and the grants, as for a new job.
                    "export": ["jobs.view_job"], "rerun": ["jobs.view_job"],
                    "events": ["jobs.view_job"]}  # fmt: skip
    request_serializers = {
        "create": serializers.JobRequestSerializer,
        "push": serializers.PushRequestSerializer,
        "fetch": serializers.FetchRequestSerializer,
    }

    @staticmethod
    def _whole_id(ident: str) -> bool:
        try:
            uuid.UUID(ident)
        except ValueError:
            return False
        return True

    def get_object(self):
        """A job by its id or a prefix of it (the short ids `jobs` lists), as the CLI's
        Job.for_id takes them: among the jobs the requester may view only (a prefix never
        names, nor counts, one they may not), ambiguous a 400 listing the candidates."""
        key = self.lookup_url_kwarg or self.lookup_field
        ident = str(self.kwargs.get(key, ""))
        if not self._whole_id(ident) and (prefix := id_prefix(ident)) is not None:
            jobs = self.get_queryset().filter(pk__startswith=prefix).order_by("-created")
            found = [str(pk) for pk in jobs.values_list("pk", flat=True)[: MAX_CANDIDATES + 1]]
            if len(found) > 1:
                more = ", ..." if len(found) > MAX_CANDIDATES else ""
                ids = ", ".join(found[:MAX_CANDIDATES]) + more
                count = f"{len(found)}{'+' if more else ''}"
                raise ValidationError({"id": [E_AMBIGUOUS.format(ident=ident, count=count,
                                                                 ids=ids)]})  # fmt: skip
            if found:
                self.kwargs[key] = found[0]
        return super().get_object()

    #: Host tasks a job shows inline, in the list and the detail: a page's worth (the
    #: rest: GET {job}/tasks/), so that a job of 10,000 hosts is not one 10,000-row answer.
    tasks_shown = settings.REST_FRAMEWORK["PAGE_SIZE"]

    def viewable(self, user, jobs):
        """The jobs the user may view, each with only the host tasks they may view (and
        ``hidden_hosts``, how many others it has): the first page of them to show a job;
        every one to act on it (cancel, files); none for their own page (tasks)."""
        if self.action == "tasks":
            return visible.viewable_jobs(user, jobs)
        tasks = HostTask.objects.with_celery_state().order_by("ip_key")
        limit = self.tasks_shown if self.action in ("list", "retrieve") else None
        return visible.viewable_jobs(user, jobs, tasks, tasks_limit=limit)

    def get_serializer(self, *args, **kwargs):
        if self.action in ("list", "retrieve") and args:
            # The counts of each job's host tasks (their summary, done, ok), of all of them,
            # in one query for the page of jobs: only the first of their tasks are loaded.
            jobs = args[0] if isinstance(args[0], list) else [args[0]]
            counts = visible.task_counts(self.request.user, jobs)
            for job in jobs:
                job.task_counts = counts[job.pk]
        return super().get_serializer(*args, **kwargs)

    @extend_schema(
        summary="The job's host tasks, by IP, a page at a time",
        description="Those on hosts you may view, as the job's own `tasks` shows the first "
        "of them (its `tasks_next` links here); ?state=failed (repeatable, or comma-separated) "
        "and ?failed=true (every end but ok) narrow them.",
        parameters=TASK_FILTERS,
        responses=serializers.HostTaskSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def tasks(self, request, *args, **kwargs):
        job = self.get_object()
        tasks = self._chosen_tasks(request, job)
        page = self.paginate_queryset(visible.viewable_tasks(request.user, tasks))
        shown = serializers.HostTaskSerializer(page, many=True,
                                               context=self.get_serializer_context())  # fmt: skip
        return self.get_paginated_response(shown.data)

    @staticmethod
    def _chosen_tasks(request, job: Job):
        """The job's host tasks by IP, narrowed by ?state= (repeatable, or comma-separated)
        and ?failed=true (every end but ok): a 400 for a state there is not."""
        states = [v for given in request.query_params.getlist("state") for v in given.split(",")
                  if v.strip()]  # fmt: skip
        unknown = sorted(set(states) - set(HostTaskStateChoices.values))
        if unknown:
            raise ValidationError(
                {
                    "state": [
                        E_NO_STATE.format(
                            states=", ".join(unknown), known=", ".join(HostTaskStateChoices.values)
                        )
                    ]
                }
            )
        if request.query_params.get("failed", "").lower() in ("1", "true", "yes"):
            states += NOT_OK
        tasks = HostTask.objects.with_celery_state().filter(job=job).order_by("ip_key")
        return tasks.filter(state__in=states) if states else tasks

    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None,
            renderer_classes=[CSVRenderer, JSONLinesRenderer])  # fmt: skip
    def export(self, request, *args, **kwargs):
        job = self.get_object()
        tasks = visible.viewable_tasks(request.user, self._chosen_tasks(request, job))
        output = visible.reads_output(request.user)
        renderer = request.accepted_renderer
        body = renderer.render([report.row(t, output) for t in tasks])
        # Not a DRF Response: that drops the Content-Type of an empty body (no host matched).
        response = HttpResponse(body, content_type=f"{renderer.media_type}; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="job-{job.pk}.{renderer.format}"'
        return response

    @action(detail=True, methods=["post"])
    def rerun(self, request, *args, **kwargs):
        job = self.get_object()
        body = serializers.RerunRequestSerializer(data=request.data)
        if not body.is_valid():
            raise ValidationError(flat_errors(body.errors))
        data = body.validated_data
        again = services.rerun(str(job.pk), body.chosen_states(), actor_of(request),
                               app=self.celery_app, online_only=data["online_only"],
                               confirm=data["confirm"])  # fmt: skip
        return self._accepted(again)

    @extend_schema(
        summary="The job's events as they happen (Server-Sent Events)",
        description="`output` (a host's new output, with each stream's byte offset; with "
        "jobs.view_output) and `task` (a host task was stored: read it again) events, each "
        "with its cursor as its id. One answer streams for up to 25 s: come back with "
        "`after` (or Last-Event-ID) set to the last id read. A user has at most "
        "CMDB_EVENTS_STREAMS_PER_USER answers streaming at once (429 past it).",
        parameters=[OpenApiParameter("after", str, description="the last event id read")],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR),
            429: OpenApiResponse(serializers.DetailSerializer, "All the user's streams taken."),
        },
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None,
            renderer_classes=[EventStreamRenderer, JSONRenderer])  # fmt: skip
    def events(self, request, *args, **kwargs):
        job = self.get_object()
        slot = live.stream_slot(request.user.pk)
        shown = visible.viewable_tasks(request.user, HostTask.objects.filter(job=job))
        rows = shown.values_list("task_id", "state", "ip")
        states, ips = {t: st for t, st, _ in rows}, {t: ip for t, _, ip in rows}
        unfinished = {t for t, state in states.items() if state not in live.TERMINAL}
        return live.events_response(
            job,
            ips,
            unfinished,
            visible.reads_output(request.user),
            live.cursor_of(request),
            slot=slot,
        )

    def get_serializer_class(self):
        return self.request_serializers.get(self.action) or super().get_serializer_class()

    def create(self, request, *args, **kwargs):
        data, by = self._valid(request), actor_of(request)
        if data["kind"] == JobKindChoices.COLLECT:
            job = services.collect(Targets.of(data), by, app=self.celery_app)
        else:
            job = services.run(data["command"], Targets.of(data), by, app=self.celery_app)
        return self._accepted(job)

    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def push(self, request, *args, **kwargs):
        # A body larger than the limit was refused before it was read (cmdb.web.middleware).
        data = self._valid(request)
        upload = data["file"]
        try:
            job = services.push(
                Upload(upload, upload.name, upload.size, archive=data["archive"]), data["dest"],
                Targets.of(data), actor_of(request), mode=data["mode"], owner=data["owner"],
                app=self.celery_app, allow_unsafe_parents=data["allow_unsafe_parents"],
            )  # fmt: skip
        finally:
            upload.close()  # a large upload's spool file goes now, not at garbage collection
        return self._accepted(job)

    @action(detail=False, methods=["post"])
    def fetch(self, request, *args, **kwargs):
        data = self._valid(request)
        job = services.fetch(data["path"], Targets.of(data), actor_of(request),
                             app=self.celery_app)  # fmt: skip
        return self._accepted(job)

    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, TarRenderer])
    def files(self, request, *args, **kwargs):
        job = self.get_object()
        # Only the hosts the user may view: the others' tasks were not prefetched.
        kept = [t for t in job.host_tasks.all() if t.fetched and "path" in t.fetched
                and t.fetched_removed_at is None]  # fmt: skip
        if not kept:
            raise NotFound(E_NO_FILES)
        record_download(actor_of(request), job, kept, archive=True)
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

    def _valid(self, request) -> dict:
        body = self.get_serializer(data=request.data)
        if not body.is_valid():
            raise ValidationError(flat_errors(body.errors))
        return body.validated_data

    def _accepted(self, job: Job) -> Response:
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
    queryset = HostTask.objects.with_celery_state()
    viewable = staticmethod(visible.viewable_tasks)
    serializer_class = serializers.HostTaskSerializer
    filterset_class = filtersets.HostTaskFilterSet
    permission_classes = [ActionPermissions]
    #: The file is the host's (another user's /etc/shadow, say): its output, not its record.
    action_perms = {**CancelMixin.action_perms,
                    "file": ["jobs.view_hosttask", "jobs.view_output"],
                    "output": ["jobs.view_hosttask", "jobs.view_output"]}  # fmt: skip
    #: Polled by the Celery task id that `run`, the API and the admin print per host.
    lookup_field = "task_id"

    def tasks_to_cancel(self, task: HostTask) -> list[HostTask]:
        return [task]

    @extend_schema(
        summary="The whole output kept on the server (run --keep-output)",
        description="The host's stdout (or `stream=stderr`) as it wrote it, up to "
        "CMDB_KEEP_OUTPUT_MAX_BYTES.",
        parameters=[OpenApiParameter("stream", str, enum=["stdout", "stderr"])],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY),
            404: OpenApiResponse(serializers.DetailSerializer, "Output not kept."),
            503: OpenApiResponse(
                serializers.DetailSerializer, "The kept output's folder is not the server's alone."
            ),
        },
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, BinaryRenderer])
    def output(self, request, *args, **kwargs):
        return live.output_response(self.get_object(), request.GET.get("stream", "stdout"),
                                    actor_of(request))  # fmt: skip

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
        record_download(actor_of(request), task.job, [task])
        name = f"{task.ip}-{os.path.basename(task.fetched['path'])}"
        response = FileResponse(f, as_attachment=True, filename=name)
        digest = base64.b64encode(bytes.fromhex(task.fetched["sha256"])).decode()
        # RFC 9530: the client can check what it got against what the host had.
        response["Repr-Digest"] = f"sha-256=:{digest}:"
        response["ETag"] = f'"{task.fetched["sha256"]}"'
        return response
