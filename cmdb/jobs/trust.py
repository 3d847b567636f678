"""What the server believes of what agents send: only what the accepted key of the host it
concerns has signed (wire.messages ``signed``), for that host.

Anything else is dropped and counted (in the broker's Redis, ``names.DROPPED_KEY``, shown by
`manage.py keys list`) and logged without its content; the real message still counts when it
comes. Anyone who can write to the broker can send a report in any task's name: without this, a
forged "ok, exit 0" would end a real host's running `apt-get upgrade` before its real result.
"""

import functools
import logging
from collections import Counter

from cmdb.hosts.choices import KeyStateChoices
from cmdb.jobs.broker import BROKER_ERRORS, redis_client
from wire import names, signing

logger = logging.getLogger(__name__)

# Why a message was not believed (the counters' names, after the kind of message).
R_UNKNOWN_TASK = "unknown task"
R_NOT_ACCEPTED = "host's key not accepted"
R_WRONG_HOST = "names another host than its task's"
R_UNSIGNED = "unsigned"
R_BAD_SIGNATURE = "not signed by the host's accepted key"
R_MALFORMED = "malformed"
R_STALE = "not newer than the last one"

W_DROPPED = "{kind} for {what!r} dropped: {reason} (from {agent!r})"
#: Messages of one kind and reason logged between two flushes of the counts.
LOG_EACH = 20


def _short(value) -> str:
    """What a sender said, for a log line: a string of at most 80 characters (repr'd in it)."""
    return value[:80] if isinstance(value, str) else type(value).__name__


@functools.lru_cache(maxsize=1 << 16)
def public_key(pem: str):
    """An accepted key (PEM, as Host.agent_key holds it) parsed once, or None if it is not one."""
    try:
        return signing.public_key_from_pem(pem)
    except signing.SigningKeyError:
        return None


def signed_by(message, raw: dict, pem: str) -> str | None:
    """Why ``raw`` (as it arrived) is not a ``message`` (a class of wire.messages) signed by the
    key ``pem``, or None."""
    if not raw.get("signature"):
        return R_UNSIGNED
    key = public_key(pem) if pem else None
    if key is None or not message.verify(key, raw):
        return R_BAD_SIGNATURE
    return None


def speaker(task) -> tuple[str, str, bool]:
    """(key, key state, candidate) of who may speak for ``task``: its host's, while the host is
    at the address the task was sent to. A host moved since (PATCH ip) forgot its keys; the
    key accepted at its new address is another machine's, which never had the task."""
    host = task.host
    if host is None or host.ip != task.ip:
        return "", "", False
    return host.agent_key, host.key_state, bool(host.candidate_key)


def from_host(message, raw: dict, ip: str, pem: str, key_state: str,
              candidate: bool = False) -> str | None:  # fmt: skip
    """Why ``raw`` is not a ``message`` from the host ``ip`` (its accepted key ``pem``), or None.
    ``candidate``: another key turned up since ``pem`` was accepted (Host.objects.speaking):
    until an operator decides, ``pem`` still speaks for the host.

    Checked on the message as it arrived, before it is read: a report in another version of the
    contract is still known to be the host's (and then ends its task with "upgrade").
    """
    speaks = key_state == KeyStateChoices.ACCEPTED or (
        candidate and key_state == KeyStateChoices.PENDING
    )
    if not speaks or not pem:
        return R_NOT_ACCEPTED
    if raw.get("host") != ip:
        # Signed by this host's key, yet for another host's task: a host speaks for itself only.
        return R_WRONG_HOST
    return signed_by(message, raw, pem)


class Dropped:
    """Messages not believed in one batch: logged one by one, counted in Redis at once."""

    def __init__(self):
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, reason: str, what="", agent="", quiet: bool = False) -> None:
        """Count one; log it unless ``quiet`` (what a pending host's agent sends every few
        seconds) or LOG_EACH of its kind were logged since the last flush (a flood of forged
        messages must not flood the log too: the counts say how many)."""
        field = f"{kind}: {reason}"
        self.counts[field] += 1
        if quiet or self.counts[field] > LOG_EACH:
            return
        logger.warning(W_DROPPED.format(kind=kind, what=_short(what), reason=reason,
                                        agent=_short(agent)))  # fmt: skip

    def flush(self, app) -> None:
        if not self.counts:
            return
        counts, self.counts = self.counts, Counter()
        try:
            with redis_client(app) as client, client.pipeline(transaction=False) as pipe:
                for field, n in counts.items():
                    pipe.hincrby(names.DROPPED_KEY, field, n)
                pipe.execute()
        except BROKER_ERRORS:  # the log has them all the same
            logger.warning("could not count %d dropped messages", sum(counts.values()))


def dropped_counts(app) -> dict[str, int]:
    """Every count of messages not believed since the broker's Redis started keeping them."""
    with redis_client(app) as client:
        raw = client.hgetall(names.DROPPED_KEY)
    return {k.decode(): int(v) for k, v in sorted(raw.items())}
