"""record(): the one way into the audit trail, for every front-end and the server itself."""

import json
import math
import uuid

from cmdb.access.actor import Actor
from cmdb.audit.choices import DEFAULT_OUTCOME, AuditActionChoices, AuditOutcomeChoices
from cmdb.audit.models import AuditEntry

#: Characters of a command kept (a pasted script can be long; the trail is not its store).
MAX_COMMAND = 64 * 1024
#: Characters of any other string kept: a target, a reason, a key of detail.
MAX_TEXT = 4096
#: Characters of detail (as JSON) kept; past it, detail keeps its start as text.
MAX_DETAIL = 64 * 1024
#: Past this magnitude, PostgreSQL's jsonb gives a float back as an int, which would change
#: the entry's hash: such a float is kept as its text.
MAX_EXACT_FLOAT = 1e15

E_ACTION = "unknown audit action {action!r} (one of cmdb.audit.choices.AuditActionChoices)"
E_OUTCOME = "unknown audit outcome {outcome!r} (ok, refused or failed)"


def _text(value, limit: int = MAX_TEXT) -> str:
    # PostgreSQL refuses NUL in text and JSON: an entry must be stored whatever it quotes.
    return str(value)[:limit].replace("\x00", "\ufffd")


def clean(value):
    """``value`` as JSON that both databases store and give back unchanged (the hash is over
    what is stored): strings capped, NUL replaced, tuples and sets as lists, the rest text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) and abs(value) < MAX_EXACT_FLOAT else repr(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(clean(v) for v in value)
    return _text(value)


def _detail(detail: dict | None) -> dict:
    detail = clean(detail or {})
    if not isinstance(detail, dict):
        detail = {"value": detail}
    text = json.dumps(detail, ensure_ascii=False)
    if len(text) > MAX_DETAIL:
        detail = {"truncated": True, "text": text[:MAX_DETAIL]}
    return detail


def record(
    actor: Actor | None,
    action: str,
    *,
    outcome: str | None = None,
    kind: str = "",
    command: str = "",
    targets_given=None,
    targets_resolved=None,
    job=None,
    detail: dict | None = None,
    username: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit trail and return it.

    ``actor``: who, through what, from where (None: the server itself). ``action``: an
    AuditActionChoices value. ``outcome``: "ok", "refused" or "failed" (by default "refused"
    for a refused dispatch, "failed" for a failed login, else "ok"). ``targets_given``: what
    the requester named (a list, or a dict of hosts/groups/where); ``targets_resolved``: the
    IPs. ``job``: a Job or its id. ``detail``: JSON, e.g. ``{"reason": ...}`` for a refusal.
    ``username``: the name a request claimed when nobody is authenticated (a failed login).

    Joins the caller's transaction: record a refusal outside any transaction that is about
    to be rolled back, or it goes with it.
    """
    if action not in AuditActionChoices.values:
        raise ValueError(E_ACTION.format(action=action))
    if outcome is not None and outcome not in AuditOutcomeChoices.values:
        raise ValueError(E_OUTCOME.format(outcome=outcome))
    actor = actor or Actor.system()
    resolved = [_text(ip, 64) for ip in (targets_resolved or [])]
    detail = _detail(detail)
    if len(command) > MAX_COMMAND:
        detail["command_chars"] = len(command)  # what was cut, so the cut is not silent
    job_id = getattr(job, "pk", job)
    return AuditEntry.objects.append(
        username=_text(actor.username or username or "", 150),
        via=actor.via,
        address=_text(actor.address, 45),
        action=action,
        outcome=outcome or DEFAULT_OUTCOME.get(action, AuditOutcomeChoices.OK),
        kind=_text(kind, 32),
        command=_text(command, MAX_COMMAND),
        targets_given=clean(targets_given if targets_given is not None else []),
        targets_resolved=resolved,
        hosts=f" {' '.join(resolved)} " if resolved else "",
        job_id=uuid.UUID(str(job_id)) if job_id is not None else None,
        detail=detail,
    )
