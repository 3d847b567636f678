"""Adding and removing grants, for the CLI (and any other front-end): checked as a whole."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from cmdb import audit
from cmdb.access import grants
from cmdb.access.models import Grant
from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.context import current_actor
from cmdb.hosts.models import HostGroup
from cmdb.jobs.dispatch import Problems
from cmdb.jobs.exceptions import NotFound, Refused

E_NO_USER = "no user {name!r}"
E_NO_GROUP = "no group {name!r} (a Django group of users; host groups are --host-group)"
E_NO_GRANT = "no grant {pk}"
E_NOBODY = "give the users or groups the grant is for"
E_MAX_HOSTS = "a host ceiling is a number of hosts, 0 or more (0: every job confirms), not {n}"


def add(principal: str, actions: list[str], host_groups: list[str] = (), all_hosts=False,
        where: list[str] = (), max_hosts: int | None = None, note: str = "") -> Grant:  # fmt: skip
    """A grant for ``principal`` (a username, or @group for a Django group)."""
    users, groups = ([], [principal[1:]]) if principal.startswith("@") else ([principal], [])
    return create(users, groups, actions, host_groups, all_hosts, where, max_hosts, note)


def create(users: list[str], groups: list[str], actions: list[str], host_groups: list[str] = (),
           all_hosts=False, where: list[str] = (), max_hosts: int | None = None,
           note: str = "") -> Grant:  # fmt: skip
    """A grant for these users and Django groups (by name), checked as a whole: Refused with
    every problem, or made and in the audit trail."""
    problems = Problems()
    found_users = get_user_model().objects.filter(username__in=users)
    known = {u.get_username() for u in found_users}
    problems.add("users", *(E_NO_USER.format(name=n) for n in users if n not in known))
    found_groups = Group.objects.filter(name__in=groups)
    known = {g.name for g in found_groups}
    problems.add("groups", *(E_NO_GROUP.format(name=n) for n in groups if n not in known))
    if not (users or groups):
        problems.add("users", E_NOBODY)
    problems.add("grant", *grants.check(list(actions), list(host_groups), all_hosts, list(where)))
    if max_hosts is not None and (isinstance(max_hosts, bool) or not isinstance(max_hosts, int)
                                  or max_hosts < 0):  # fmt: skip
        problems.add("max_hosts", E_MAX_HOSTS.format(n=repr(max_hosts)))
    if problems:
        raise Refused(problems)
    with transaction.atomic():
        grant = Grant.objects.create(actions=list(dict.fromkeys(actions)), all_hosts=all_hosts,
                                     where=list(where), max_hosts=max_hosts, note=note)  # fmt: skip
        grant.host_groups.set(HostGroup.objects.filter(name__in=host_groups))
        grant.users.set(found_users)
        grant.groups.set(found_groups)
        audit.record(current_actor(), AuditActionChoices.GRANT_ADD,
                     detail={"grant": grant.pk, "text": str(grant)})  # fmt: skip
    return grant


def remove(pk: int) -> Grant:
    grant = Grant.objects.filter(pk=pk).first()
    if grant is None:
        raise NotFound(E_NO_GRANT.format(pk=pk))
    text = str(grant)
    with transaction.atomic():
        grant.delete()
        audit.record(current_actor(), AuditActionChoices.GRANT_REMOVE,
                     detail={"grant": pk, "text": text})  # fmt: skip
    grant.description = text
    return grant
