"""Admin actions on hosts: run a command, collect facts, push or fetch a file. Each lands on
the live job page."""

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from cmdb.celery import app
from cmdb.files.uploads import prepare_upload
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.dispatch import BrokerUnavailable, CommandRequest, DispatchError, dispatch_command
from cmdb.jobs.signer import SigningKeyError
from cmdb.web.forms import FetchFileForm, PushFileForm, RunCommandForm
from wire.blobs import TransferError


def _dispatch(modeladmin, request, queryset, kind: str, command="", timeout=None, params=None):
    try:
        job = dispatch_command(
            CommandRequest(
                kind=kind,
                command=command,
                targets=list(queryset.values_list("ip", flat=True)),
                timeout=timeout,
                requested_by=request.user.get_username(),
                params=params or {},
            ),
            app,
        )
    except DispatchError as exc:
        modeladmin.message_user(request, "; ".join(exc.problems), messages.ERROR)
        return None
    except SigningKeyError as exc:
        modeladmin.message_user(request, f"nothing dispatched: {exc}", messages.ERROR)
        return None
    except BrokerUnavailable as exc:
        modeladmin.message_user(request, str(exc), messages.ERROR)
        return redirect("web:job", job_id=exc.job.pk)
    return redirect("web:job", job_id=job.pk)


@admin.action(description="Run command on selected hosts", permissions=["run_command"])
def run_command(modeladmin, request, queryset):
    form = RunCommandForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        return _dispatch(
            modeladmin, request, queryset, JobKindChoices.COMMAND,
            form.cleaned_data["command"], form.cleaned_data["timeout"],
        )  # fmt: skip
    return _form_page(modeladmin, request, queryset, "Run a command", "Run", form, "run_command")


@admin.action(description="Collect facts from selected hosts", permissions=["collect_facts"])
def collect_facts(modeladmin, request, queryset):
    return _dispatch(modeladmin, request, queryset, JobKindChoices.COLLECT)


def _form_page(modeladmin, request, queryset, title: str, submit: str, form, action: str):
    """The intermediate page of an action: its form, with the selected hosts carried along."""
    return TemplateResponse(request, "web/host_action.html", {
        **modeladmin.admin_site.each_context(request),
        "title": title, "submit": submit, "form": form, "hosts": queryset, "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, "opts": modeladmin.model._meta,
    })  # fmt: skip


@admin.action(description="Push a file to selected hosts", permissions=["run_command"])
def push_file(modeladmin, request, queryset):
    """Pushing files is as powerful as running commands, so it takes the same permission."""
    applying = "apply" in request.POST
    form = PushFileForm(request.POST if applying else None, request.FILES if applying else None)
    if not (applying and form.is_valid()):
        return _form_page(modeladmin, request, queryset, "Push a file", "Push", form, "push_file")
    upload, data = form.cleaned_data["file"], form.cleaned_data
    limit = settings.CMDB["MAX_UPLOAD_BYTES"]
    try:
        if upload.size > limit:
            raise ValueError(f"the file is larger than CMDB_MAX_UPLOAD_BYTES ({limit} bytes)")
        params = prepare_upload(
            app, upload, upload.name, data["dest"], data["mode"] or None, data["owner"] or None,
            archive=data["archive"], max_bytes=limit,
        )  # fmt: skip
    except (TransferError, ValueError, KombuError, RedisError, OSError) as exc:
        modeladmin.message_user(request, f"nothing pushed: {exc}", messages.ERROR)
        return None
    finally:
        upload.close()
    for name in ("batch", "max_failures"):
        if data[name] is not None:
            params[name] = data[name]
    return _dispatch(modeladmin, request, queryset, JobKindChoices.PUSH, params=params)


@admin.action(description="Fetch a file from selected hosts", permissions=["run_command"])
def fetch_file(modeladmin, request, queryset):
    """Reading any file as the agent's user (keys, shadow) is as strong as running commands."""
    form = FetchFileForm(request.POST if "apply" in request.POST else None)
    if not ("apply" in request.POST and form.is_valid()):
        return _form_page(
            modeladmin, request, queryset, "Fetch a file", "Fetch", form, "fetch_file"
        )
    params = {"agent": {"path": form.cleaned_data["path"]}}  # kept under FETCH_DIR/<job id>/
    return _dispatch(modeladmin, request, queryset, JobKindChoices.FETCH, params=params)
