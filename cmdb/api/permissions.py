"""API permissions: Django model permissions, view included; dispatch and cancel by their own."""

from collections.abc import Mapping

from rest_framework.permissions import DjangoModelPermissions

from cmdb.jobs.choices import JobKindChoices


class ModelPermissions(DjangoModelPermissions):
    """Like DRF's, but reading needs the model's view permission too (an API is not public)."""

    perms_map = {**DjangoModelPermissions.perms_map, "GET": ["%(app_label)s.view_%(model_name)s"],
                 "HEAD": ["%(app_label)s.view_%(model_name)s"]}  # fmt: skip


def _authenticated(request) -> bool:
    return bool(request.user and request.user.is_authenticated)


class ActionPermissions(ModelPermissions):
    """Model permissions, except for the actions a view lists in ``action_perms``.

    A custom action such as ``cancel`` is a POST, which model permissions would take for
    "add": the view says what it needs instead (``{"cancel": ["jobs.cancel_job"]}``).
    """

    def has_permission(self, request, view):
        perms = getattr(view, "action_perms", {}).get(getattr(view, "action", None))
        if perms is None:
            return super().has_permission(request, view)
        return _authenticated(request) and request.user.has_perms(perms)


class DispatchPermissions(ActionPermissions):
    """Creating a job is dispatching it: the permission depends on the job's kind.

    ``jobs.add_job`` is never what counts: who may collect facts need not be allowed to run
    arbitrary commands on the fleet.
    """

    #: Permission needed to dispatch each kind of job.
    kind_perms = {
        JobKindChoices.COMMAND: "jobs.run_command",
        JobKindChoices.COLLECT: "jobs.collect_facts",
    }

    def has_permission(self, request, view):
        if getattr(view, "action", None) != "create":
            return super().has_permission(request, view)
        if not _authenticated(request):
            return False
        data = request.data if isinstance(request.data, Mapping) else {}
        kind = data.get("kind", JobKindChoices.COMMAND)
        if isinstance(kind, str) and kind in self.kind_perms:
            return request.user.has_perm(self.kind_perms[kind])
        # An unknown kind is a 400 from validation, for anyone who may dispatch something.
        return any(request.user.has_perm(perm) for perm in self.kind_perms.values())


class GroupPermissions(ModelPermissions):
    """PATCH of a host group: changing it, or only its members (as `manage.py groups add`
    does); cmdb.hosts.inventory checks which of the two each field takes."""

    def has_permission(self, request, view):
        if request.method != "PATCH":
            return super().has_permission(request, view)
        return _authenticated(request) and any(
            request.user.has_perm(p)
            for p in ("hosts.change_hostgroup", "hosts.change_hostgroup_members")
        )
