"""Admin actions on hosts: run a command, collect facts, push or fetch a file. Each calls the
service layer (cmdb.jobs.services) and lands on the live job page, or says why not."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from cmdb.access.actor import actor_of
from cmdb.jobs import services
from cmdb.jobs.exceptions import BrokerDown, CannotSign, Refused
from cmdb.jobs.services import Targets, Upload
from cmdb.web.forms import FetchFileForm, PushFileForm, RunCommandForm


def _act(modeladmin, request, action, refused: str = "nothing dispatched"):
    """Run ``action()``, which returns a job; the service layer's errors as admin messages."""
    try:
        job = action()
    except Refused as exc:
        modeladmin.message_user(request, f"{refused}: " + "; ".join(exc.problems), messages.ERROR)
        return None
    except CannotSign as exc:
        modeladmin.message_user(request, f"nothing dispatched: {exc}", messages.ERROR)
        return None
    except BrokerDown as exc:
        modeladmin.message_user(request, str(exc), messages.ERROR)
        return redirect("web:job", job_id=exc.job.pk) if exc.job is not None else None
    return redirect("web:job", job_id=job.pk)


def _targets(queryset, timeout: int | None = None, **rolling) -> Targets:
    return Targets(hosts=list(queryset.values_list("ip", flat=True)), timeout=timeout, **rolling)


@admin.action(description="Run command on selected hosts", permissions=["run_command"])
def run_command(modeladmin, request, queryset):
    form = RunCommandForm(request.POST if "apply" in request.POST else None)
    if not ("apply" in request.POST and form.is_valid()):
        return _form_page(modeladmin, request, queryset, "Run a command", "Run", form,
                          "run_command")  # fmt: skip
    data, by = form.cleaned_data, actor_of(request, "admin")
    return _act(modeladmin, request, lambda: services.run(
        data["command"], _targets(queryset, data["timeout"]), by))  # fmt: skip


@admin.action(description="Collect facts from selected hosts", permissions=["collect_facts"])
def collect_facts(modeladmin, request, queryset):
    by = actor_of(request, "admin")
    return _act(modeladmin, request, lambda: services.collect(_targets(queryset), by))


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
    data, by = form.cleaned_data, actor_of(request, "admin")
    upload = data["file"]
    try:
        return _act(modeladmin, request, lambda: services.push(
            Upload(upload, upload.name, upload.size, archive=data["archive"]), data["dest"],
            _targets(queryset, batch=data["batch"], max_failures=data["max_failures"]), by,
            mode=data["mode"] or None, owner=data["owner"] or None,
        ), refused="nothing pushed")  # fmt: skip
    finally:
        upload.close()


@admin.action(description="Fetch a file from selected hosts", permissions=["run_command"])
def fetch_file(modeladmin, request, queryset):
    """Reading any file as the agent's user (keys, shadow) is as strong as running commands."""
    form = FetchFileForm(request.POST if "apply" in request.POST else None)
    if not ("apply" in request.POST and form.is_valid()):
        return _form_page(
            modeladmin, request, queryset, "Fetch a file", "Fetch", form, "fetch_file"
        )
    path, by = form.cleaned_data["path"], actor_of(request, "admin")
    # Kept under FETCH_DIR/<job id>/, where the job page links each copy.
    return _act(modeladmin, request, lambda: services.fetch(path, _targets(queryset), by))
