"""Changing the inventory from the API: hosts and host groups added, changed, removed.

What Django's signals record by themselves (cmdb.audit.signals: a host added or removed, its
IP changed, group members, a group deleted) is recorded so; the rest is recorded here, so
that every change of the inventory is in the audit trail whoever made it. A host the actor
may not view is as unknown to them as one that does not exist: it is never listed, changed,
taken out of a group or put in one (the API's querysets are narrowed before this is called).
"""

from django.db import transaction

from cmdb.access import grants, visible
from cmdb.access.actor import Actor
from cmdb.access.models import Action, Grant
from cmdb.audit.choices import AuditActionChoices, AuditOutcomeChoices
from cmdb.audit.trail import record
from cmdb.hosts.choices import AgentStatusChoices, KeyStateChoices
from cmdb.hosts.models import Host, HostGroup

#: Moving a host's IP moves every command sent to it (its queue is its IP).
IP_PERMISSION = "hosts.change_host_ip"
GROUP_PERMISSION = "hosts.change_hostgroup"
#: Grants are by group: who changes its members changes who may act on them.
MEMBERS_PERMISSION = "hosts.change_hostgroup_members"


E_MEMBER = (
    "{user} may not {verb} {ip} {prep} {group}: the grants on {group} give {actions}, "
    "and they do not hold {missing} on {ip}"
)


class NotAllowed(Exception):
    """The actor lacks a permission this change needs; ``field`` is what asked for it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def _require(actor: Actor, perm: str, field: str, what: str) -> None:
    if actor.user is None or not actor.user.has_perm(perm):
        raise NotAllowed(field, f"{actor.username or 'nobody'} may not {what} (needs {perm})")


@transaction.atomic
def add_host(actor: Actor, ip: str, hostname: str = "") -> Host:
    return Host.objects.create(ip=ip, hostname=hostname)  # audited by its post_save signal


#: What an IP change leaves of the host's keys: the key was the agent's at the old address;
#: whatever answers at the new one is unknown until it registers and is accepted (an agent
#: there must not be sent specs signed for a key it never had), as an SSH host key is.
FORGOTTEN_KEYS = {
    "agent_key": "", "key_fingerprint": "", "candidate_key": "", "candidate_fingerprint": "",
    "key_state": KeyStateChoices.PENDING, "key_changed_at": None, "ssh_host_key": "",
    "agent_status": AgentStatusChoices.UNKNOWN, "agent_name": "", "agent_pid": None,
}  # fmt: skip
E_KEYS = (
    "{user} may not {what} {ip}: that takes the keys action on it (no grant of theirs gives it)"
)


def _require_keys(actor: Actor, host: Host, field: str, what: str, action: str) -> None:
    """Moving or removing a host is as strong as managing its key (its queue, its key go with
    it): the keys action on it, not only view. Refused and audited (outside the change's
    transaction, so that the entry stays) otherwise."""
    if actor.user is None or not grants.refusals(actor.user, Action.KEYS, [host]):
        return
    reason = E_KEYS.format(user=actor.username, what=what, ip=host.ip)
    record(actor, action, outcome=AuditOutcomeChoices.REFUSED, targets_resolved=[host.ip],
           detail={"host": host.pk, "reason": reason})  # fmt: skip
    raise NotAllowed(field, reason)


E_IP_GRANTS = (
    "{user} may not move {ip} to {new}: the grants that cover it at one address and not at "
    "the other give {actions}, and they do not hold {missing} on {ip}"
)


class _Undone(Exception):
    pass


def ip_refusals(actor: Actor, host: Host, new_ip: str) -> list[str]:
    """Why ``actor`` may not move ``host`` to ``new_ip``: a grant may narrow by ip, so a new
    address can put the host into a grant (or take it out) as a group's members do; the
    actor must hold on it every action those grants give (member_refusals' rule)."""
    user = actor.user
    if user is None or user.is_superuser:
        return []
    before = grants.covering(host)
    try:
        with transaction.atomic():  # what covers it at the new address, then undone
            Host.objects.filter(pk=host.pk).update(ip=new_ip)
            after = grants.covering(host)
            raise _Undone
    except _Undone:
        pass
    actions = sorted({a for grant in before ^ after for a in grant.actions})
    missing = [a for a in actions if grants.refusals(user, a, [host])]
    if not missing:
        return []
    return [E_IP_GRANTS.format(user=actor.username, ip=host.ip, new=new_ip,
                               actions=", ".join(actions), missing=", ".join(missing))]  # fmt: skip


def change_host(actor: Actor, host: Host, ip: str | None = None,
                hostname: str | None = None) -> Host:  # fmt: skip
    if ip is not None and ip != host.ip:
        _require(actor, IP_PERMISSION, "ip", "change a host's IP address")
        _require_keys(actor, host, "ip", "change the IP address of", AuditActionChoices.HOST_CHANGE)
        refused = ip_refusals(actor, host, ip)
        if refused:
            record(actor, AuditActionChoices.HOST_CHANGE, outcome=AuditOutcomeChoices.REFUSED,
                   targets_resolved=[host.ip, ip],
                   detail={"host": host.pk, "ip": {"from": host.ip, "to": ip},
                           "reason": refused})  # fmt: skip
            raise NotAllowed("ip", "; ".join(refused))
    return _change_host(actor, host, ip, hostname)


@transaction.atomic
def _change_host(actor: Actor, host: Host, ip, hostname) -> Host:
    if ip is not None and ip != host.ip:
        forgotten = {f: getattr(host, f) for f in ("key_state", "key_fingerprint",
                                                   "candidate_fingerprint")}  # fmt: skip
        old = host.ip
        host.ip = ip  # the IP change is audited by its signal, once saved
        if host.agent_key or host.candidate_key or host.ssh_host_key:
            record(actor, AuditActionChoices.KEY_DELETE, targets_resolved=[old, ip],
                   detail={"host": host.pk, "reason": "IP changed", "ssh_host_key":
                           bool(host.ssh_host_key), **forgotten})  # fmt: skip
        for field, value in FORGOTTEN_KEYS.items():
            setattr(host, field, value)
    if hostname is not None and hostname != host.hostname:
        record(
            actor,
            AuditActionChoices.HOST_CHANGE,
            targets_resolved=[host.ip],
            detail={"host": host.pk, "hostname": {"from": host.hostname, "to": hostname}},
        )
        host.hostname = hostname  # fmt: skip
    host.save()
    return host


def remove_host(actor: Actor, host: Host) -> None:
    _require_keys(actor, host, "host", "remove", AuditActionChoices.HOST_REMOVE)
    _remove_host(actor, host)


@transaction.atomic
def _remove_host(actor: Actor, host: Host) -> None:
    host.delete()  # audited by its pre_delete signal, with the groups it leaves


@transaction.atomic
def add_group(actor: Actor, name: str, description: str = "", hosts=()) -> HostGroup:
    if hosts:
        _require(actor, MEMBERS_PERMISSION, "hosts", "change which hosts are in a group")
    group = HostGroup.objects.create(name=name, description=description)
    record(actor, AuditActionChoices.GROUP_CHANGE,
           detail={"group": name, "created": True, "description": description})  # fmt: skip
    group.hosts.add(*hosts)  # members audited by the m2m signal
    return group


def group_actions(group: HostGroup) -> set[str]:
    """Every action some grant gives through ``group`` (whatever its fact expressions: a
    host that does not match them now may later)."""
    found = Grant.objects.filter(host_groups=group).values_list("actions", flat=True)
    return {action for actions in found for action in actions}


def member_refusals(actor: Actor, group: HostGroup, added, removed) -> list[str]:
    """Why ``actor`` may not put ``added`` into ``group`` nor take ``removed`` out of it.

    A group's members are who its grants cover: adding a host gives every grantee of the
    group its actions on the host, removing one takes them away. So the actor must already
    hold, on each host, every action the group's grants give: nobody hands out (to
    themselves or to others) more than they have. The server itself (no user) may."""
    user = actor.user
    if user is None or user.is_superuser:
        return []
    actions = sorted(group_actions(group))
    lines = []
    for verb, prep, hosts in (("add", "to", added), ("remove", "from", removed)):
        for host in sorted(hosts, key=lambda h: h.ip):
            missing = [a for a in actions if grants.refusals(user, a, [host])]
            if missing:
                lines.append(E_MEMBER.format(user=actor.username, verb=verb, ip=host.ip,
                                             prep=prep, group=group.name,
                                             actions=", ".join(actions),
                                             missing=", ".join(missing)))  # fmt: skip
    return lines


def change_group(actor: Actor, group: HostGroup, name: str | None = None,
                 description: str | None = None, hosts=None) -> HostGroup:  # fmt: skip
    """``hosts``: the members the actor may view, as they should be; members the actor may
    not view stay (they cannot see them, so they cannot mean to remove them). A member added
    or removed takes, on that host, every action the group's grants give (member_refusals);
    a refusal is audited, outside the change's transaction so that it stays."""
    if hosts is not None:
        seen = set(visible.viewable_hosts(actor.user, Host.objects.filter(groups=group)))
        wanted = set(hosts)
        if wanted != seen:
            _require(actor, MEMBERS_PERMISSION, "hosts", "change which hosts are in a group")
        refused = member_refusals(actor, group, wanted - seen, seen - wanted)
        if refused:
            record(actor, AuditActionChoices.GROUP_CHANGE, outcome=AuditOutcomeChoices.REFUSED,
                   targets_resolved=sorted(h.ip for h in wanted ^ seen),
                   detail={"group": group.name, "reason": refused})  # fmt: skip
            raise NotAllowed("hosts", "; ".join(refused))
    return _change_group(actor, group, name, description, hosts)


@transaction.atomic
def _change_group(actor: Actor, group: HostGroup, name, description, hosts) -> HostGroup:
    changed = {}
    if name is not None and name != group.name:
        changed["name"] = {"from": group.name, "to": name}
        group.name = name
    if description is not None and description != group.description:
        changed["description"] = {"from": group.description, "to": description}
        group.description = description
    if changed:
        _require(actor, GROUP_PERMISSION, next(iter(changed)), "rename or describe a group")
        group.save()
        record(actor, AuditActionChoices.GROUP_CHANGE, detail={"group": group.name, **changed})
    if hosts is not None:
        # Read again inside the transaction: the members as they are now are what changes.
        seen = set(visible.viewable_hosts(actor.user, Host.objects.filter(groups=group)))
        wanted = set(hosts)
        if wanted != seen:
            _require(actor, MEMBERS_PERMISSION, "hosts", "change which hosts are in a group")
            group.hosts.remove(*(seen - wanted))
            group.hosts.add(*(wanted - seen))
    return group


#: Not how many: a group shows no count of the members one may not view.
E_HIDDEN_MEMBERS = (
    "{user} may not remove from {group} its members they may not view: the grants on {group} "
    "give {actions}"
)


def remove_group(actor: Actor, group: HostGroup) -> None:
    """Removing a group takes every member out of it: what emptying it takes (member_refusals,
    on every member; those the actor may not view neither named nor counted), refused and audited
    outside the removal's transaction."""
    user = actor.user
    if user is not None and not user.is_superuser and group_actions(group):
        members = list(Host.objects.filter(groups=group))
        seen = set(visible.viewable_hosts(user, Host.objects.filter(groups=group)))
        refused = member_refusals(actor, group, [], [h for h in members if h in seen])
        actions = sorted(group_actions(group))
        hidden = [h for h in members if h not in seen
                  and any(grants.refusals(user, a, [h]) for a in actions)]  # fmt: skip
        if hidden:
            refused.append(E_HIDDEN_MEMBERS.format(user=actor.username, group=group.name,
                                                   actions=", ".join(actions)))  # fmt: skip
        if refused:
            record(actor, AuditActionChoices.GROUP_CHANGE, outcome=AuditOutcomeChoices.REFUSED,
                   targets_resolved=sorted(h.ip for h in members if h in seen),
                   detail={"group": group.name, "deleted": True, "reason": refused})  # fmt: skip
            raise NotAllowed("hosts", "; ".join(refused))
    _remove_group(actor, group)


@transaction.atomic
def _remove_group(actor: Actor, group: HostGroup) -> None:
    group.delete()  # audited by its pre_delete signal, with its members
