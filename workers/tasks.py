"""Tasks executed on the managed host. They never raise: every outcome is a structured result."""

import logging
import os
import socket
import time
import traceback

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init, worker_ready

from workers import claims, config, runner, signing
from workers.celery import app
from workers.identity import validate_ipv4

logger = logging.getLogger(__name__)

#: Largest head/tail a dispatcher may ask for: results travel through the broker.
MAX_CAPTURE_BYTES = 1 << 20

E_WRONG_HOST = "message for host {wanted} reached the agent consuming {queue}; refused"
E_NOT_OUR_QUEUE = "message claims queue {queue!r}, which this agent does not consume; refused"
E_CANCELLED = "cancelled before it started"
E_NO_CLAIM = "the run-once claim could not be recorded on this host ({reason}); refused"
E_DUPLICATE = "this task id already ran on this broker; a second delivery was refused"
E_BACKSTOP = "killed by the agent's time limit backstop (the runner's own timeout did not fire)"
E_BAD_SPEC = "malformed task: {reason}"
E_INTERNAL = "agent error: {exc!r}"

# The worker's main process id, recorded before the pool forks: the server compares it with the
# pid in heartbeats to tell a restarted agent (whose running commands are lost) from a live one.
_agent_pid = os.getpid()
_broker = None
_ledger = None
#: The server's public key; loaded before the pool forks (so children share it), else lazily.
_public_key = None

#: How long the run-once claim on a task id is kept in Redis: as long as the host's own
#: (workers.claims), itself twice as long as a signed message is valid. Not days: at 100k tasks
#: a day, a week of claims would be some 70 MB of the broker's memory.
CLAIM_TTL = claims.KEEP


@worker_init.connect
def _agent_init(sender=None, **_):
    global _agent_pid
    _agent_pid = os.getpid()
    if getattr(getattr(sender, "app", app), "main", app.main) != app.main:
        return
    # `celery -A workers worker` too: an agent that could not check signatures would refuse
    # every message, so it does not start at all (python -m workers says so before this).
    try:
        _server_key()
    except signing.SigningKeyError as exc:
        raise SystemExit(f"agent: {exc}") from None


def _server_key():
    """The server's public key ($CMDB_AGENT_PUBKEY); SigningKeyError when there is none."""
    global _public_key
    if _public_key is None:
        _public_key = signing.agent_public_key()
        if _public_key is None:
            raise signing.SigningKeyError(signing.E_NO_PUBKEY)
    return _public_key


@worker_process_init.connect
def _reset_clients(**_):
    # A connection made before fork shares its socket with the parent; make one per child.
    global _broker
    _broker = None


def _redis():
    """The broker's own Redis client (kombu's), so Sentinel and TLS URLs work as for Celery."""
    global _broker
    if _broker is None:
        _broker = app.connection_for_write()
    return _broker.default_channel.client


def _claim_here(task_id: str) -> str | None:
    """The host's own run-once claim (workers.claims): why not to run, or None. Unlike the one
    in Redis, a claim that cannot be recorded here means the task does not run."""
    global _ledger
    try:
        if _ledger is None:
            _ledger = claims.Ledger(claims.default_folder())
        return None if _ledger.claim(task_id) else E_DUPLICATE
    except (OSError, ValueError) as exc:
        logger.error("could not record the claim on %s: %s", task_id, exc)
        return E_NO_CLAIM.format(reason=exc)


def _claim(task_id: str) -> str | None:
    """Check the operator's cancel mark and claim the task id; return why not to run, or None.

    The claim makes a command run at most once even if Redis hands the message out again
    (a restored unacknowledged message, a replayed one).
    """
    try:
        with _redis().pipeline(transaction=False) as pipe:
            pipe.exists(config.CANCELLED_KEY.format(task_id=task_id))
            pipe.set(config.CLAIMED_KEY.format(task_id=task_id), _agent_pid, nx=True, ex=CLAIM_TTL)
            cancelled, claimed = pipe.execute()
    except Exception:
        # The broker just delivered this message; if Redis is flaky now, running is the
        # behaviour the operator asked for.
        logger.warning("could not check or claim %s", task_id, exc_info=True)
        return None
    if cancelled:
        return E_CANCELLED
    if not claimed:
        return E_DUPLICATE
    return None


def _cancel_mark(task_id: str):
    key = config.CANCELLED_KEY.format(task_id=task_id)

    def cancelled() -> bool:
        try:
            return bool(_redis().exists(key))
        except Exception:
            logger.warning("could not check whether %s was cancelled", task_id, exc_info=True)
            return False

    return cancelled


def _empty_stream() -> dict:
    return runner.StreamCapture(head="", tail="", total_bytes=0, truncated=False).to_dict()


def _refusal(outcome: str, error: str) -> dict:
    now = time.time()
    return {
        "outcome": outcome,
        "exit_code": None,
        "stdout": _empty_stream(),
        "stderr": _empty_stream(),
        "started_at": now,
        "finished_at": now,
        "duration": 0.0,
        "error": error,
        "pid": None,
    }


def _capture_size(spec: dict, key: str) -> int:
    return max(0, min(int(spec.get(key, 65536)), MAX_CAPTURE_BYTES))


def _unauthentic(task, spec: dict, queue: str) -> str | None:
    """Why this message is not the server's, for this host, now; None when it is.

    Rebuilt from what the agent itself knows: its task's registered name (not the message's),
    the queue it consumed, the task id and the spec it is about to act on.
    """
    # delivery_info travels inside the message on Redis: whoever writes a message can name any
    # queue there, so only a queue this agent consumes can be the one it received from.
    if queue not in (task.app.amqp.queues.consume_from or {}):
        return E_NOT_OUR_QUEUE.format(queue=queue)
    try:
        key = _server_key()
    except signing.SigningKeyError as exc:
        return signing.E_NO_KEY.format(reason=exc)
    auth = getattr(task.request, signing.HEADER, None)
    return signing.verify(key, auth, task.name, queue, task.request.id, spec)


def _guarded(task, spec: dict, queue: str, body, announce_late: bool = False) -> dict:
    """The checks every host task passes before ``body(spec, cancelled)`` runs, then it.

    The signature comes first: an unsigned message must not even take the run-once claim on
    a task id (which would make the server's genuine message with that id refused).
    """
    refusal = _unauthentic(task, spec, queue)
    if refusal:
        logger.warning("refused %s %s on %s: %s", task.name, task.request.id, queue, refusal)
        return _refusal(runner.Outcome.ERROR, refusal)
    wanted = spec.get("host")
    if not queue or wanted != queue:
        # A message re-targeted to another host's queue (or run in-process) must not run here.
        return _refusal(runner.Outcome.ERROR, E_WRONG_HOST.format(wanted=wanted, queue=queue))
    refusal = _claim_here(task.request.id) or _claim(task.request.id)
    if refusal == E_DUPLICATE:
        # The first delivery owns the host task: this copy must not touch its record.
        return {**_refusal(runner.Outcome.ERROR, refusal), "duplicate": True}
    if refusal:
        outcome = runner.Outcome.CANCELLED if refusal == E_CANCELLED else runner.Outcome.ERROR
        return _refusal(outcome, refusal)
    started = {"task_id": task.request.id, "host": queue, "agent": task.request.hostname,
               "agent_pid": _agent_pid, "started_at": time.time()}  # fmt: skip

    def announce() -> None:
        task.app.send_task(config.TASK_STARTED, args=[started],
                           queue=spec.get("reply_queue") or config.results_queue())  # fmt: skip

    cancelled = _cancel_mark(task.request.id)
    if not announce_late:
        announce()
        return body(spec, cancelled)
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

    return body(spec, cancelled_or_announce)


def _run(spec: dict, cancelled) -> dict:
    result = runner.run_command(
        spec["command"],
        timeout=float(spec["timeout"]),
        head_bytes=_capture_size(spec, "head_bytes"),
        tail_bytes=_capture_size(spec, "tail_bytes"),
        max_output_bytes=int(spec.get("max_output_bytes", 1 << 30)),
        # Cancel is cooperative: the runner polls the operator's mark and kills the command's
        # process group. (A SIGUSR1 from revoke(terminate=True) could land anywhere in Celery's
        # own code, such as while it publishes the result.)
        cancelled=cancelled,
        # Only the soft time limit backstop raises this now: the runner's own timeout failed.
        interrupts=(SoftTimeLimitExceeded,),
        spool_dir=os.environ.get("CMDB_SPOOL_DIR") or None,
    ).to_dict()
    if result["outcome"] == runner.Outcome.CANCELLED and not cancelled():
        result.update(outcome=runner.Outcome.TIMEOUT, error=E_BACKSTOP)
    return result


def _collect(spec: dict, cancelled) -> dict:
    # Imported here: an agent that never collects does not pay for the plugins.
    import collectors

    started, clock = time.time(), time.monotonic()
    report = collectors.collect(spec.get("plugins") or None)
    facts, errors = report.get("facts", {}), report.get("errors", {})
    summary = f"collected {', '.join(sorted(facts)) or 'nothing'}\n"
    stderr = "".join(f"{name}: {e.get('error')}\n" for name, e in sorted(errors.items()))
    result = _refusal(runner.Outcome.OK if facts else runner.Outcome.ERROR,
                      "" if facts else "every collector plugin failed")  # fmt: skip
    text = runner.StreamCapture
    result.update(
        stdout=text(summary, "", len(summary.encode()), False).to_dict(),
        stderr=text(stderr, "", len(stderr.encode()), False).to_dict(),
        exit_code=0 if facts else None, started_at=started, finished_at=time.time(),
        duration=time.monotonic() - clock, facts_report=report,
    )  # fmt: skip
    return result


def _transfer_result(outcome: dict, started: float, clock: float, **extra) -> dict:
    """A push or fetch outcome as a host task payload: ok (verified, skipped, sent) or error."""
    ok = outcome["outcome"] in ("verified", "skipped", "sent")
    text = f"{outcome['outcome']}: {outcome.get('detail', '')}\n"
    result = _refusal(runner.Outcome.OK if ok else runner.Outcome.ERROR,
                      "" if ok else outcome.get("detail", "failed"))  # fmt: skip
    result.update(
        stdout=runner.StreamCapture(text, "", len(text.encode()), False).to_dict(),
        exit_code=0 if ok else None, started_at=started, finished_at=time.time(),
        duration=time.monotonic() - clock, transfer=outcome, **extra,
    )  # fmt: skip
    return result


def _push(spec: dict, cancelled) -> dict:
    # Imported here: an agent that never receives files does not load the module.
    from workers import transfer

    started, clock = time.time(), time.monotonic()
    receive = transfer.receive_tree if spec.get("tree") else transfer.receive_file
    kwargs = {"files": spec.get("files") or {}} if spec.get("tree") else {}
    outcome = receive(
        _redis(), spec["manifest"], spec["dest"], mode=spec.get("mode"), owner=spec.get("owner"),
        root=os.environ.get("CMDB_AGENT_ROOT") or None, **kwargs,
    )  # fmt: skip
    return _transfer_result(outcome, started, clock)


def _fetch(spec: dict, cancelled) -> dict:
    from workers import transfer

    started, clock = time.time(), time.monotonic()
    outcome = transfer.send_file(
        _redis(), spec["path"], root=os.environ.get("CMDB_AGENT_ROOT") or None,
        namespace=f"fetch-{spec.get('job')}-{spec.get('host')}",
    )  # fmt: skip
    extra = {"fetch_manifest": outcome["manifest"]} if outcome.get("manifest") else {}
    return _transfer_result(outcome, started, clock, **extra)


def _host_task(self, spec, body, name: str, announce_late: bool = False) -> dict:
    """Run ``body`` for a host task; whatever happens, return a payload for the server."""
    queue = (self.request.delivery_info or {}).get("routing_key") or ""
    try:
        if not isinstance(spec, dict):
            raise TypeError("spec is not an object")
        payload = _guarded(self, spec, queue, body, announce_late)
    except Exception as exc:
        logger.exception("%s %s failed inside the agent", name, self.request.id)
        payload = _refusal(runner.Outcome.ERROR, E_INTERNAL.format(exc=exc))
        payload["traceback"] = traceback.format_exc(limit=20)
    payload.update(
        task_id=self.request.id, host=queue, agent=self.request.hostname, agent_pid=_agent_pid
    )
    return payload


@app.task(name=config.RUN_COMMAND, bind=True, ignore_result=True, acks_late=False)
def run_command(self, spec: dict) -> dict:
    """Run one shell command for one host task and return everything about how it ended.

    The return value travels to the central worker as the first argument of the link callback
    the dispatcher attached, so it must be JSON and must exist even when things go wrong.
    """
    if isinstance(spec, dict) and not (isinstance(spec.get("command"), str)
                                       and spec["command"].strip()):  # fmt: skip
        payload = _refusal(runner.Outcome.ERROR, E_BAD_SPEC.format(reason="empty command"))
        payload.update(task_id=self.request.id, agent=self.request.hostname)
        return payload
    return _host_task(self, spec, _run, "run_command", announce_late=True)


@app.task(name=config.COLLECT_FACTS, bind=True, ignore_result=True, acks_late=False)
def collect_facts(self, spec: dict) -> dict:
    """Collect this host's facts with the plugins the spec names (only ones under collectors.)."""
    return _host_task(self, spec, _collect, "collect_facts")


@app.task(name=config.PUSH_FILES, bind=True, ignore_result=True, acks_late=False)
def push_files(self, spec: dict) -> dict:
    """Receive a pushed file or folder: verified by sha256, renamed into place atomically."""
    return _host_task(self, spec, _push, "push_files")


@app.task(name=config.FETCH_FILE, bind=True, ignore_result=True, acks_late=False)
def fetch_file(self, spec: dict) -> dict:
    """Send one of this host's files to the server, in chunks through the broker."""
    return _host_task(self, spec, _fetch, "fetch_file")


@worker_ready.connect
def _register_with_server(sender=None, **_):
    """Tell the server which hosts this agent serves: one message per IP queue it consumes."""
    agent_app = getattr(sender, "app", app)
    if agent_app.main != app.main:
        return
    queues = agent_app.amqp.queues.consume_from or {}
    for name in queues:
        try:
            ip = validate_ipv4(name)
        except ValueError:
            continue
        agent_app.send_task(
            config.REGISTER_AGENT,
            args=[
                {
                    "ip": ip,
                    "hostname": socket.gethostname(),
                    "agent": getattr(sender, "hostname", ""),
                    "agent_pid": os.getpid(),
                    "started_at": time.time(),
                }
            ],
            queue=config.central_queue(),
        )
