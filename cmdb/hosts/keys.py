"""Agents' keys, kept as salt-key keeps them: a host an agent registers is pending until an
operator accepts its key; a pending or rejected host receives nothing.

Every agent makes its own Ed25519 key pair on first start and presents the public key, signed
with the private one, in each registration (wire.messages.Registration). What the server does
with it, by the state of the host's key:

    no host yet          a new host, pending (accepted with CMDB_AUTO_ACCEPT; refused past
                         CMDB_MAX_PENDING pending hosts)
    no key yet           the key is recorded, pending (accepted with CMDB_AUTO_ACCEPT)
    the same key         accepted: the agent's name, pid and status are updated; else nothing
    another key          pending again, loudly, whatever it was (as SSH's changed host key):
                         never accepted by itself
"""

import ipaddress
import logging
import time

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from cmdb import audit
from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.audit.choices import AuditOutcomeChoices
from cmdb.audit.context import current_actor
from cmdb.hosts.choices import AgentStatusChoices, KeyStateChoices
from cmdb.hosts.models import Host
from cmdb.jobs import services
from cmdb.jobs.exceptions import NotPermitted, ServiceError
from wire import signing
from wire.messages import Registration

logger = logging.getLogger(__name__)

#: Host.hostname's column.
HOSTNAME_MAX = 255

E_NOT_SIGNED = "registration of {ip} refused: {reason}"
E_TOO_MANY_PENDING = ("registration of {ip} refused: {count} hosts are pending already "
                      "(CMDB_MAX_PENDING); accept or reject some first")  # fmt: skip
W_KEY_CHANGED = ("the agent of {ip} came back with ANOTHER KEY ({new}, was {old}): the host "
                 "is pending and receives nothing until `manage.py keys accept {ip}`")  # fmt: skip


def check_signed(registration: Registration) -> str | None:
    """Why the registration is not signed by the key it presents, or None."""
    try:
        key = signing.public_key_from_pem(registration.pubkey)
    except signing.SigningKeyError as exc:
        return str(exc)
    if not Registration.verify(key, registration.to_wire()):  # its signature field included
        return signing.E_BAD_AGENT_SIGNATURE
    return None


def fingerprint(pem: str) -> str:
    return signing.key_fingerprint(signing.public_key_from_pem(pem))


def auto_accepts(ip: str) -> bool:
    address = ipaddress.IPv4Address(ip)
    return any(address in network for network in settings.CMDB["AUTO_ACCEPT"])


def malformed(registration: Registration, now: float) -> str | None:
    """Why the registration's fields cannot be taken, or None."""
    try:
        ipaddress.IPv4Address(registration.ip)
    except ValueError:
        return "not an IPv4 address"
    if len(registration.hostname) > HOSTNAME_MAX or not registration.hostname.isprintable():
        return "not a hostname"
    started = registration.started_at
    if started is None or started > now + signing.CLOCK_SLACK:
        return "no start time, or one in the future"
    return None


def register(registration: Registration):
    """Record an agent's registration; returns (host or None, what happened): "new key",
    "changed key", "same key", "restarted" (the same key, a new agent process), or why not."""
    problem = malformed(registration, time.time()) or check_signed(registration)
    if (
        not problem
        and Host.objects.filter(
            ip=registration.ip,
            agent_key=registration.pubkey,
            agent_started__gte=registration.started_at,
        ).exists()
    ):
        # This key's agent registered as started then (or later) already: a replay. A
        # registration delayed in the broker (the central worker was down) is still taken.
        problem = "not newer than the last one of this key's agent (a replay?)"
    if problem:
        # The IP as sent, escaped and short: nothing checked it yet (a forged log line).
        logger.warning(E_NOT_SIGNED.format(ip=repr(registration.ip[:64]), reason=problem))
        return None, "refused"
    try:
        return _register(registration)
    except IntegrityError:  # two first registrations of one IP at once: the other one won
        return _register(registration)


def _register(registration: Registration):
    cfg = settings.CMDB
    create, max_pending = cfg["AUTO_REGISTER"], cfg["MAX_PENDING"]
    auto_accept = auto_accepts(registration.ip)
    key, now = registration.pubkey, timezone.now()
    with transaction.atomic():
        host = Host.objects.select_for_update().filter(ip=registration.ip).first()
        if host is None:
            if not create:
                return None, "unknown"
            pending = Host.objects.filter(key_state=KeyStateChoices.PENDING).count()
            if not auto_accept and pending >= max_pending:
                logger.warning(E_TOO_MANY_PENDING.format(ip=registration.ip, count=pending))
                return None, "too many pending"
            host = Host(ip=registration.ip, hostname=registration.hostname)
        if not host.agent_key or host.key_state == KeyStateChoices.NONE:
            outcome = "new key"
            host.agent_key, host.key_fingerprint = key, fingerprint(key)
            host.key_state = KeyStateChoices.ACCEPTED if auto_accept else KeyStateChoices.PENDING
        elif host.agent_key != key and host.key_state in (KeyStateChoices.ACCEPTED,
                                                           KeyStateChoices.PENDING):  # fmt: skip
            outcome = "changed key"
            logger.warning(W_KEY_CHANGED.format(ip=host.ip, new=fingerprint(key),
                                                old=host.key_fingerprint))  # fmt: skip
            if host.key_state == KeyStateChoices.ACCEPTED or host.candidate_key:
                # As salt-key keeps it: the accepted key stays on record (and what the host ran
                # under it still counts) until an operator accepts the new one or rejects it.
                # Anyone on the broker can send this registration.
                host.candidate_key, host.candidate_fingerprint = key, fingerprint(key)
            else:  # pending, never accepted: the newest key is the one to decide on
                host.agent_key, host.key_fingerprint = key, fingerprint(key)
            host.key_state, host.key_changed_at = KeyStateChoices.PENDING, now
        elif host.agent_key != key:
            outcome = "changed key"  # rejected: it stays rejected, whatever key comes
        elif (host.agent_name, host.agent_pid) != (registration.agent, registration.agent_pid):
            outcome = "restarted"
        else:
            outcome = "same key"
        if key == host.agent_key:
            # Only for the key on record: a candidate's registration (anyone's) must not make
            # the real agent's next one look like a replay.
            host.agent_started = registration.started_at
        if host.key_state == KeyStateChoices.ACCEPTED or (host.candidate_key
                                                         and key == host.agent_key):  # fmt: skip
            # Only an accepted key's holder speaks for the host: its name and pid are what the
            # monitor judges the host's tasks by.
            host.agent_status, host.last_seen = AgentStatusChoices.ONLINE, now
            host.agent_name, host.agent_pid = registration.agent, registration.agent_pid
            if not host.hostname and registration.hostname:
                host.hostname = registration.hostname
        host.save()
    return host, outcome


#: What each verb leaves of a host's key and agent. Reject and delete take the agent's name
#: too: heartbeats under it must not make the host look online.
_FORGOTTEN_AGENT = {"agent_status": AgentStatusChoices.UNKNOWN, "agent_name": "", "agent_pid": None}
VERBS = {
    "accept": ("accepted", {"key_state": KeyStateChoices.ACCEPTED, "key_changed_at": None}),
    "reject": ("rejected", {"key_state": KeyStateChoices.REJECTED, **_FORGOTTEN_AGENT}),
    # Forgotten: the next registration is a new key (pending).
    "delete": ("deleted", {"key_state": KeyStateChoices.NONE, "agent_key": "",
                           "key_fingerprint": "", "candidate_key": "", "candidate_fingerprint": "",
                           **_FORGOTTEN_AGENT}),
}  # fmt: skip
_NO_CANDIDATE = {"candidate_key": "", "candidate_fingerprint": "", "key_changed_at": None}
#: What accept and reject do to a host with a candidate key (another key after an accepted one):
#: accept puts it in the accepted one's place; reject drops it, and the accepted one stays.
CANDIDATE_VERBS = {
    "accept": {"agent_key": F("candidate_key"), "key_fingerprint": F("candidate_fingerprint"),
               "key_state": KeyStateChoices.ACCEPTED, **_NO_CANDIDATE},
    "reject": {"key_state": KeyStateChoices.ACCEPTED, **_NO_CANDIDATE},
}  # fmt: skip


def may_manage(actor, verb: str, ips: list[str]) -> None:
    """NotPermitted (and a refused entry in the audit trail) unless the acting user may manage
    keys (hosts.manage_keys) and has a keys grant on every one of these hosts."""
    user, problems = actor.user, {}
    if user is None:
        return  # the server itself (no user acts): its own code decides, as _decide's callers
    if not user.has_perm("hosts.manage_keys"):
        problems["ips"] = [grants.E_NO_PERMISSION.format(
            user=user.get_username(), action="manage keys", perm="hosts.manage_keys")]  # fmt: skip
    hosts = Host.objects.filter(ip__in=ips).order_by("ip_key")
    if refused := grants.refusals(user, Action.KEYS, hosts):
        problems.setdefault("ips", []).extend(refused)
    if problems:
        audit.record(actor, f"key.{verb}", outcome=AuditOutcomeChoices.REFUSED,
                     targets_resolved=sorted(ips), detail={"reason": problems})  # fmt: skip
        raise NotPermitted(problems)


def _decide(verb: str, ips: list[str]) -> list[str]:
    """Apply ``verb`` to the keys of these hosts that it changes; returns their IPs."""
    past, fields = VERBS[verb]
    actor = current_actor()
    if actor.user is not None:
        may_manage(actor, verb, ips)
    hosts = Host.objects.filter(ip__in=ips).exclude(agent_key="")
    with transaction.atomic():
        changed = set()
        if verb in CANDIDATE_VERBS:
            candidates = hosts.filter(candidate_key__gt="")
            changed = set(candidates.values_list("ip", flat=True))
            candidates.update(**CANDIDATE_VERBS[verb])
            for ip in sorted(changed):
                logger.warning("the new key of %s %s%s", ip, past,
                               "; its accepted key stays" if verb == "reject" else "")  # fmt: skip
            hosts = hosts.exclude(ip__in=changed)
        if verb != "delete":
            hosts = hosts.exclude(key_state=fields["key_state"])
        done = set(hosts.values_list("ip", flat=True))
        hosts.update(**fields)
        if done | changed:
            # Whoever is acting (the request's user; the CLI and the server: the server).
            audit.record(current_actor(), f"key.{verb}", targets_resolved=sorted(done | changed))
    for ip in sorted(done):
        logger.warning("key of %s %s", ip, past)
    return sorted(done | changed)


def accept(ips: list[str]) -> list[str]:
    """Accept the pending (or rejected) keys of these hosts; returns the IPs accepted."""
    done = _decide("accept", ips)
    if done and settings.CMDB["COLLECT_ON_START"]:
        # What the host is: learnt at once, as for an agent that starts accepted.
        try:
            services.collect(services.Targets(hosts=done), requested_by="key accepted")
        except ServiceError as exc:  # the keys are accepted all the same
            logger.warning("no collection after accepting %s: %s", ", ".join(done), exc)
    return done


def reject(ips: list[str]) -> list[str]:
    return _decide("reject", ips)


def delete(ips: list[str]) -> list[str]:
    return _decide("delete", ips)
