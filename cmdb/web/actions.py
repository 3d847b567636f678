"""Admin actions on hosts: run a command, collect facts. Both land on the live job page."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from cmdb.celery import app
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.dispatch import BrokerUnavailable, CommandRequest, DispatchError, dispatch_command
from cmdb.web.forms import RunCommandForm


def _dispatch(modeladmin, request, queryset, kind: str, command: str = "", timeout=None):
    try:
        job = dispatch_command(
            CommandRequest(
                kind=kind,
                command=command,
                targets=list(queryset.values_list("ip", flat=True)),
                timeout=timeout,
                requested_by=request.user.get_username(),
            ),
            app,
        )
    except DispatchError as exc:
        modeladmin.message_user(request, "; ".join(exc.problems), messages.ERROR)
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
    return TemplateResponse(request, "web/run_command.html", {
        **modeladmin.admin_site.each_context(request),
        "title": "Run command",
        "form": form,
        "hosts": queryset,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "opts": modeladmin.model._meta,
    })  # fmt: skip


@admin.action(description="Collect facts from selected hosts", permissions=["collect_facts"])
def collect_facts(modeladmin, request, queryset):
    return _dispatch(modeladmin, request, queryset, JobKindChoices.COLLECT)
