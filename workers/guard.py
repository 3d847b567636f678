"""The checks every host task passes before its body runs: the server's signature, the contract's
version and shape, the target host, the operator's cancel mark and the run-once claims.

The signature comes first: an unsigned message must not even take the run-once claim on a task
id (which would make the server's genuine message with that id refused).
"""

import logging
import time

from wire import names, signing
from wire.messages import SPECS, Outcome, Report, Started, WireError

logger = logging.getLogger(__name__)

E_WRONG_HOST = "message for host {wanted} reached the agent consuming {queue}; refused"
E_NOT_OUR_QUEUE = "message for queue {queue!r} reached the agent of {identity}; refused"
E_CANCELLED = "cancelled before it started"
E_NO_CLAIM = "the run-once claim could not be recorded on this host ({reason}); refused"
E_DUPLICATE = "this task id already ran on this broker; a second delivery was refused"
E_FENCED = "the server ended this task before it started here (unreachable or cancelled); refused"
E_NO_BROKER_CLAIM = "could not claim the task in the broker ({exc}); refused, not run"
E_BAD_SPEC = "malformed task: {reason}"

#: Seconds an agent keeps trying to take a task's claim while the broker is away.
CLAIM_PATIENCE = 15.0


def unauthentic(agent, task, raw: dict, queue: str) -> str | None:
    """Why this message is not the server's, for this host, now; None when it is.

    Rebuilt from what the agent itself knows: its task's registered name (not the message's),
    the queue it consumed, the task id and the spec it is about to act on.
    """
    # delivery_info travels inside the message on Redis: whoever writes a message can name any
    # queue there, so only a host this agent was started for can be the one it received from.
    # Not the queues it consumes now: remote control (add_consumer) can change those.
    if queue not in agent.identity:
        identity = ", ".join(sorted(agent.identity)) or "no host"
        return E_NOT_OUR_QUEUE.format(queue=queue, identity=identity)
    try:
        key = agent.server_key()
    except signing.SigningKeyError as exc:
        return signing.E_NO_KEY.format(reason=exc)
    auth = getattr(task.request, signing.HEADER, None)
    return signing.verify(key, auth, task.name, queue, task.request.id, raw)


def claim_here(agent, task_id: str) -> str | None:
    """The host's own run-once claim (workers.claims): why not to run, or None. Unlike the one
    in Redis, a claim that cannot be recorded here means the task does not run."""
    try:
        return None if agent.ledger().claim(task_id) else E_DUPLICATE
    except (OSError, ValueError) as exc:
        logger.error("could not record the claim on %s: %s", task_id, exc)
        return E_NO_CLAIM.format(reason=exc)


def claim_in_broker(agent, host: str, task_id: str, ttl: int) -> str | None:
    """Check the operator's cancel mark and claim the task id in Redis; why not to run, or None.

    The claim makes a command run at most once even if Redis hands the message out again
    (a restored unacknowledged message, a replayed one), and it is the server's fence: at the
    reach deadline the server takes the claim itself (names.CLAIMED_BY_SERVER) and calls the
    task unreachable only if it got it. So a claim that cannot be taken means not running,
    whatever the reason: the server may have ended the task already.
    """
    claim = names.CLAIMED_KEY.format(host=host, task_id=task_id)
    # A broker that restarts just after handing the message over (a few seconds) is waited
    # for: the claim decides, and the task should run if the server has not ended it.
    give_up = time.monotonic() + CLAIM_PATIENCE
    while True:
        try:
            with agent.redis().pipeline(transaction=False) as pipe:
                pipe.exists(names.CANCELLED_KEY.format(task_id=task_id))
                pipe.set(claim, agent.pid, nx=True, ex=ttl)
                pipe.get(claim)
                cancelled, claimed, holder = pipe.execute()
            break
        except Exception as exc:
            if time.monotonic() > give_up:
                logger.warning("could not check or claim %s", task_id, exc_info=True)
                return E_NO_BROKER_CLAIM.format(exc=type(exc).__name__)
            time.sleep(0.5)
    if cancelled:
        return E_CANCELLED
    if claimed:
        return None
    if holder in (names.CLAIMED_BY_SERVER, names.CLAIMED_BY_SERVER.encode()):
        return E_FENCED
    return E_DUPLICATE


def cancel_mark(agent, task_id: str):
    """A function telling whether the operator has cancelled ``task_id`` meanwhile."""
    key = names.CANCELLED_KEY.format(task_id=task_id)

    def cancelled() -> bool:
        try:
            return bool(agent.redis().exists(key))
        except Exception:
            logger.warning("could not check whether %s was cancelled", task_id, exc_info=True)
            return False

    return cancelled


class Unauthentic(Exception):
    """The message is not the server's for this host, now: its refusal must not be signed."""

    def __init__(self, report: Report):
        super().__init__(report.error)
        self.report = report


def guarded(agent, task, raw, queue: str, body, claim_ttl: int, announce_late=False) -> Report:
    """Run ``body(agent, spec, cancelled)`` for this message if every check passes; else the
    report of the refusal. Raises Unauthentic (with the refusal) for a message the server did
    not sign for this host: the agent's signature on anything about it would let whoever sent
    it end a real task of the same id ("error: signature missing") in the host's name."""
    if not isinstance(raw, dict):
        raise Unauthentic(Report.refusal(Outcome.ERROR, E_BAD_SPEC.format(
            reason="spec is not an object")))  # fmt: skip
    refusal = unauthentic(agent, task, raw, queue)
    if refusal:
        logger.warning("refused %s %s on %s: %s", task.name, task.request.id, queue, refusal)
        raise Unauthentic(Report.refusal(Outcome.ERROR, refusal))
    try:
        spec = SPECS[task.name].from_wire(raw)
    except WireError as exc:
        return Report.refusal(Outcome.ERROR, E_BAD_SPEC.format(reason=exc))
    if not queue or spec.host != queue:
        # A message re-targeted to another host's queue (or run in-process) must not run here.
        return Report.refusal(Outcome.ERROR, E_WRONG_HOST.format(wanted=spec.host, queue=queue))
    refusal = claim_here(agent, task.request.id) or claim_in_broker(
        agent, queue, task.request.id, claim_ttl
    )
    if refusal in (E_DUPLICATE, E_FENCED):
        # The first delivery owns the host task: this copy must not touch its record.
        return Report.refusal(Outcome.ERROR, refusal, duplicate=True)
    if refusal:
        outcome = Outcome.CANCELLED if refusal == E_CANCELLED else Outcome.ERROR
        return Report.refusal(outcome, refusal)
    started = Started(task_id=task.request.id, host=queue, agent=task.request.hostname or "",
                      agent_pid=agent.pid, started_at=time.time())  # fmt: skip
    reply_queue = spec.reply_queue or agent.settings.results_queue

    def announce() -> None:
        # A notice that cannot be sent costs only itself: the command runs on, and its result
        # (or its claim, at the reach deadline) tells the server what the notice would have.
        # Signed only when sent: most commands end before they would announce themselves.
        try:
            notice = started.signed(agent.own_key()).to_wire()
            task.app.send_task(names.TASK_STARTED, args=[notice], queue=reply_queue)
        except Exception:
            logger.warning("could not send the started notice of %s", task.request.id,
                           exc_info=True)  # fmt: skip

    cancelled = cancel_mark(agent, task.request.id)
    if not announce_late:
        announce()
        return body(agent, spec, cancelled)
    # A command announces itself at the runner's first look at the cancel mark (0.5 s in):
    # most commands have ended by then, and their result is all the server needs. The notice
    # cost more than anything else the agent does per task (1.6 ms against 0.2 ms to verify
    # its signature, measured in `python -m bench`), and doubled the messages of a fan-out.
    # The server's reach deadline has 2 s of slack for it, and a command that has not
    # announced itself is not yet one whose agent can be found dead.
    announced = False

    def cancelled_or_announce() -> bool:
        nonlocal announced
        if not announced:
            announced = True
            announce()
        return cancelled()

    return body(agent, spec, cancelled_or_announce)
