"""Admin actions on hosts: run a command, collect facts, push or fetch a file. Each calls the
service layer (cmdb.jobs.services) and lands on the live job page, or says why not; a job that
would reach more hosts than its requester may without confirming comes back as the same page,
with the reason and a box to tick (the selected hosts carried along).

The hosts they are given are the admin's queryset, narrowed to those the user may view
(cmdb.hosts.admin); dispatch then checks each against the user's grant for the action."""

from dataclasses import dataclass, replace

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from cmdb.access.actor import actor_of
from cmdb.jobs import services
from cmdb.jobs.exceptions import BrokerDown, CannotSign, NeedsConfirmation, Refused
from cmdb.jobs.services import Targets, Upload
from cmdb.web.forms import CollectFactsForm, FetchFileForm, PushFileForm, RunCommandForm

E_CONFIRM = (
    "{count} hosts are more than the {ceiling} you may reach without confirming: check the "
    'selection, tick "confirm" and {submit} again.'
)
E_FILE_AGAIN = "Choose the file again: a browser never sends it twice."


@dataclass(frozen=True)
class Page:
    """An action's intermediate page: its title, its button, the action's name."""

    title: str
    submit: str
    action: str
    #: What a refused request says first.
    refused: str = "nothing dispatched"


RUN = Page("Run a command", "Run", "run_command")
COLLECT = Page("Collect facts", "Collect", "collect_facts")
PUSH = Page("Push a file", "Push", "push_file", refused="nothing pushed")
FETCH = Page("Fetch a file", "Fetch", "fetch_file")


def _form_page(modeladmin, request, queryset, page: Page, form, notes=()):
    """The intermediate page of an action: its form, with the selected hosts carried along."""
    return TemplateResponse(request, "web/host_action.html", {
        **modeladmin.admin_site.each_context(request),
        "title": page.title, "submit": page.submit, "form": form, "hosts": queryset,
        "action": page.action, "notes": list(notes),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, "opts": modeladmin.model._meta,
    })  # fmt: skip


def _act(modeladmin, request, queryset, page: Page, form, action):
    """Run ``action(targets)``, which returns a job; the service layer's errors as admin
    messages, and a request to confirm as the form's page again, with the box to tick."""
    targets = Targets(hosts=list(queryset.values_list("ip", flat=True)),
                      confirm=form.confirmed(), **form.rolling())  # fmt: skip
    try:
        job = action(targets)
    except NeedsConfirmation as exc:
        form.ask_to_confirm(exc.count)
        notes = [E_CONFIRM.format(count=exc.count, ceiling=exc.ceiling, submit=page.submit)]
        if form.is_multipart():
            notes.append(E_FILE_AGAIN)
        return _form_page(modeladmin, request, queryset, page, form, notes)
    except Refused as exc:
        modeladmin.message_user(request, f"{page.refused}: " + "; ".join(exc.problems),
                                messages.ERROR)  # fmt: skip
        return None
    except CannotSign as exc:
        modeladmin.message_user(request, f"nothing dispatched: {exc}", messages.ERROR)
        return None
    except BrokerDown as exc:
        modeladmin.message_user(request, str(exc), messages.ERROR)
        return redirect("web:job", job_id=exc.job.pk) if exc.job is not None else None
    return redirect("web:job", job_id=job.pk)


def _applying(request) -> bool:
    return "apply" in request.POST


@admin.action(description="Run command on selected hosts", permissions=["run_command"])
def run_command(modeladmin, request, queryset):
    form = RunCommandForm(request.POST if _applying(request) else None)
    if not (_applying(request) and form.is_valid()):
        return _form_page(modeladmin, request, queryset, RUN, form)
    data, by = form.cleaned_data, actor_of(request, "admin")
    return _act(modeladmin, request, queryset, RUN, form, lambda targets: services.run(
        data["command"], replace(targets, timeout=data["timeout"]), by))  # fmt: skip


@admin.action(description="Collect facts from selected hosts", permissions=["collect_facts"])
def collect_facts(modeladmin, request, queryset):
    """At once: the page is shown only when the collection needs confirming."""
    form = CollectFactsForm(request.POST if _applying(request) else None)
    by = actor_of(request, "admin")
    return _act(modeladmin, request, queryset, COLLECT, form,
                lambda targets: services.collect(targets, by))  # fmt: skip


@admin.action(description="Push a file to selected hosts", permissions=["run_command"])
def push_file(modeladmin, request, queryset):
    """Pushing files is as powerful as running commands, so it takes the same permission."""
    applying = _applying(request)
    form = PushFileForm(request.POST if applying else None, request.FILES if applying else None)
    if not (applying and form.is_valid()):
        return _form_page(modeladmin, request, queryset, PUSH, form)
    data, by = form.cleaned_data, actor_of(request, "admin")
    upload = data["file"]
    try:
        return _act(modeladmin, request, queryset, PUSH, form, lambda targets: services.push(
            Upload(upload, upload.name, upload.size, archive=data["archive"]), data["dest"],
            targets, by, mode=data["mode"] or None, owner=data["owner"] or None,
        ))  # fmt: skip
    finally:
        upload.close()


@admin.action(description="Fetch a file from selected hosts", permissions=["run_command"])
def fetch_file(modeladmin, request, queryset):
    """Reading any file as the agent's user (keys, shadow) is as strong as running commands."""
    form = FetchFileForm(request.POST if _applying(request) else None)
    if not (_applying(request) and form.is_valid()):
        return _form_page(modeladmin, request, queryset, FETCH, form)
    path, by = form.cleaned_data["path"], actor_of(request, "admin")
    # Kept under FETCH_DIR/<job id>/, where the job page links each copy.
    return _act(modeladmin, request, queryset, FETCH, form,
                lambda targets: services.fetch(path, targets, by))  # fmt: skip
