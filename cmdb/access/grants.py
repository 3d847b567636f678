"""What a user may do on which hosts, from their grants (cmdb.access.models): as one filter on
Host, so a list or a dispatch to 10,000 hosts is one query, not 10,000 checks.

A superuser may do everything; a user without a grant for an action, nothing of it. Django's
model permissions (jobs.run_command, ...) still say which kinds of thing a user may do at all;
grants say where.
"""

from collections.abc import Iterable

from django.db.models import Q

from cmdb.access.models import Action, Grant
from cmdb.assets.where import EXPRESSION, FIELDS, parse_all
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.choices import JobKindChoices

#: The grant action each job kind needs on every one of its hosts.
ACTION_OF_KIND = {
    JobKindChoices.COMMAND: Action.RUN,
    JobKindChoices.COLLECT: Action.COLLECT,
    JobKindChoices.PUSH: Action.PUSH,
    JobKindChoices.FETCH: Action.FETCH,
}

#: The Django permission each job kind needs at all (grants then say where): pushing and
#: fetching files are as strong as running commands (a shadow file, a cron entry).
PERMISSION_OF_KIND = {
    JobKindChoices.COMMAND: "jobs.run_command",
    JobKindChoices.COLLECT: "jobs.collect_facts",
    JobKindChoices.PUSH: "jobs.run_command",
    JobKindChoices.FETCH: "jobs.run_command",
}

E_NO_PERMISSION = "{user} may not {action} at all (needs the permission {perm})"
E_NOT_PERMITTED = "{user} may not {action} on {ip}: no grant of theirs covers it"
E_UNKNOWN_ACTION = "unknown action {action!r} (known: {known})"
E_NO_ACTIONS = "give at least one action"
E_NO_HOSTS = "give host groups, or all hosts"
E_UNKNOWN_HOST_GROUP = "unknown host group {name!r}"
E_WHERE_FIELD = "a grant cannot narrow by {field} ({expr!r}): {why}"

#: Fields a grant may not narrow by, and why: anyone who may edit a group's name or a host's
#: name (not a permission of its own) would widen other people's grants; a status is liveness.
NOT_IN_GRANTS = {
    "group": "give host groups instead (--host-group): renaming a group must not move hosts "
             "into a grant",
    "hostname": "a hostname is edited with the host and would move it into the grant",
    "status": "it is the agent's liveness, not what the host is",
}  # fmt: skip


def _fields(where: list[str]) -> set[str]:
    return {m.group(1) for m in map(EXPRESSION.match, where) if m}


def _grants(user, action: str) -> list[Grant]:
    found = Grant.objects.filter(Q(users=user) | Q(groups__in=user.groups.all())).distinct()
    return [g for g in found.prefetch_related("host_groups") if action in g.actions]


def _covered(grant: Grant) -> Q | None:
    """The hosts ``grant`` covers, as a filter on Host; None: none (its expression no longer
    parses or holds, so it grants nothing)."""
    part = Q() if grant.all_hosts else Q(groups__in=list(grant.host_groups.all()))
    if grant.where:
        where, problems = parse_all(grant.where)
        if problems or _fields(grant.where) & set(NOT_IN_GRANTS):
            return None
        part &= where
        if any(FIELDS[f][0].startswith("facts__") for f in _fields(grant.where) & set(FIELDS)):
            # Fail closed: "os!=windows" must not cover a host whose facts are not known.
            part &= Q(facts__isnull=False)
    # As a subquery of pks: the joins of one grant must not multiply the rows of another.
    return Q(pk__in=Host.objects.filter(part).values("pk"))


def covering(host: Host) -> set[Grant]:
    """Every grant (anyone's) that covers ``host`` as it is stored now."""
    found = set()
    for grant in Grant.objects.prefetch_related("host_groups"):
        covered = _covered(grant)
        if covered is not None and Host.objects.filter(pk=host.pk).filter(covered).exists():
            found.add(grant)
    return found


def host_filter(user, action: str) -> Q | None:
    """The hosts ``user`` may ``action`` on, as a filter on Host; None: all of them."""
    if user is None or not user.is_active:
        return Q(pk__in=[])
    if user.is_superuser:
        return None
    q = Q(pk__in=[])  # nothing, unless a grant says otherwise
    for grant in _grants(user, action):
        covered = _covered(grant)
        if covered is not None:
            q |= covered
    return q


def ceiling(user, action: str, hosts: Iterable[Host], default: int) -> tuple[int, Grant | None]:
    """The most hosts one job of ``user``'s may reach for ``action`` on ``hosts`` without
    confirming, and the grant that says so (None: ``default``, the server's
    CMDB_CONFIRM_ABOVE).

    The strictest grant involved wins: of the user's grants for the action, those that cover
    at least one of the hosts, the smallest host ceiling, a grant without one counting as
    ``default``. So a grant can raise the ceiling (an automation account's, 500) only where
    no other grant of the user's covering those hosts says less. A superuser, whom no grant
    limits, and nobody (the CLI acting as the server) have ``default``.
    """
    if user is None or user.is_superuser:
        return default, None
    pks = [h.pk for h in hosts]
    found = []
    for grant in _grants(user, action):
        covered = _covered(grant)
        if covered is not None and Host.objects.filter(pk__in=pks).filter(covered).exists():
            found.append((default, None) if grant.max_hosts is None else (grant.max_hosts, grant))
    return min(found, key=lambda pair: pair[0], default=(default, None))


def hosts_for(user, action: str, hosts=None):
    """``hosts`` (a Host queryset; all hosts by default) narrowed to what ``user`` may
    ``action`` on."""
    hosts = Host.objects.all() if hosts is None else hosts
    q = host_filter(user, action)
    return hosts if q is None else hosts.filter(q)


def kind_refusal(user, kind: str) -> list[str]:
    """Why ``user`` may not dispatch this kind of job anywhere, if they may not."""
    perm = PERMISSION_OF_KIND[kind]
    if user.has_perm(perm):
        return []
    return [E_NO_PERMISSION.format(user=user.get_username(), action=ACTION_OF_KIND[kind],
                                   perm=perm)]  # fmt: skip


def refusals(user, action: str, hosts: Iterable[Host]) -> list[str]:
    """Why ``user`` may not ``action`` on some of ``hosts``: one line per host, by name."""
    hosts = list(hosts)
    q = host_filter(user, action)
    if q is None:
        return []
    allowed = set(Host.objects.filter(pk__in=[h.pk for h in hosts]).filter(q)
                  .values_list("pk", flat=True))  # fmt: skip
    name = user.get_username() if user is not None else "nobody"
    return [E_NOT_PERMITTED.format(user=name, action=action, ip=h.ip)
            for h in hosts if h.pk not in allowed]  # fmt: skip


def check(actions: list[str], host_groups: list[str], all_hosts: bool,
          where: list[str]) -> list[str]:  # fmt: skip
    """Every problem of a grant as given (the CLI's, the API's, the admin's)."""
    problems = []
    known = ", ".join(Action.values)
    problems += [E_UNKNOWN_ACTION.format(action=a, known=known)
                 for a in actions if a not in Action.values]  # fmt: skip
    if not actions:
        problems.append(E_NO_ACTIONS)
    if not (all_hosts or host_groups):
        problems.append(E_NO_HOSTS)
    existing = set(HostGroup.objects.filter(name__in=host_groups).values_list("name", flat=True))
    problems += [E_UNKNOWN_HOST_GROUP.format(name=n) for n in host_groups if n not in existing]
    problems += parse_all(where)[1]
    for expr in where:
        match = EXPRESSION.match(expr)
        if match and match.group(1) in NOT_IN_GRANTS:
            field = match.group(1)
            problems.append(E_WHERE_FIELD.format(field=field, expr=expr, why=NOT_IN_GRANTS[field]))
    return problems
