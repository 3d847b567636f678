"""Tasks executed on the managed host. They never raise: every outcome is a structured Report.

Each task is its spec's body behind the same checks (workers.guard); the report travels to the
central worker as the first argument of the link callback the dispatcher attached, so it must
be JSON and must exist even when things go wrong.
"""

import contextlib
import logging
import math
import os
import socket
import time
import traceback

from celery import current_task
from celery.app import trace
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, worker_init, worker_process_init, worker_ready
from celery.worker import control as panel

import collectors
from wire import control, names, signing
from wire.messages import (
    MAX_CAPTURE_BYTES,
    CollectSpec,
    CommandSpec,
    FetchSpec,
    Outcome,
    PushSpec,
    Registration,
    Report,
    Stream,
    TransferOutcome,
)
from workers import claims, connections, guard, live, placing, runner
from workers.celery import agent, app
from workers.identity import validate_ipv4

logger = logging.getLogger(__name__)


E_BACKSTOP = "killed by the agent's time limit backstop (the runner's own timeout did not fire)"
E_INTERNAL = "agent error: {exc!r}"
E_ALL_PLUGINS_FAILED = "every collector plugin failed"

#: Celery's "succeeded" line without the return value: here that is the command's output, which
#: must not land in every host's journal (it goes to the server, nowhere else).
LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"

#: How long the run-once claim on a task id is kept in Redis: as long as the host's own
#: (workers.claims), itself twice as long as a signed message is valid. Not days: at 100k tasks
#: a day, a week of claims would be some 70 MB of the broker's memory.
CLAIM_TTL = claims.KEEP


@worker_init.connect
def _check_server_key(sender=None, **_):
    if getattr(getattr(sender, "app", app), "main", app.main) != app.main:
        return
    agent.started_worker(sender.app.amqp.queues.consume_from or {})
    control.obey_only_harmless(panel.Panel.data, logger)
    trace.LOG_SUCCESS = LOG_SUCCESS  # read by Celery's tracer at each success
    # `celery -A workers worker` too: an agent that could not check signatures would refuse
    # every message, so it does not start at all (python -m workers says so before this).
    try:
        agent.server_key()
        agent.own_key()  # made once, before the pool forks
    except (signing.SigningKeyError, OSError) as exc:
        raise SystemExit(f"agent: {exc}") from None


@worker_process_init.connect
def _reset_clients(**_):
    agent.forked()


@task_postrun.connect
def _release_connection(**_):
    """In a pool child, once its task and the report's callback are sent: the child's broker
    connection is closed until its next task (workers.connections), so idle children hold
    none. Not in the main process (a solo pool): it keeps its two."""
    if os.getpid() != agent.pid:
        connections.release()


def _capture_size(size: int) -> int:
    return max(0, min(size, MAX_CAPTURE_BYTES))


def _run(agent, spec: CommandSpec, cancelled) -> Report:
    task_id = current_task.request.id

    def record(pid: int) -> None:
        # So that the next agent ends this command if this one dies (workers.orphans). A record
        # that cannot be written costs only that: the command is already running.
        try:
            agent.running().add(task_id, spec.host, pid, agent.pid)
        except (OSError, ValueError) as exc:
            logger.error("could not record running command %s: %s", task_id, exc)

    try:
        return _ran(agent, spec, cancelled, record)
    finally:
        with contextlib.suppress(OSError):
            agent.running().remove(task_id)


def _live(agent, spec: CommandSpec) -> live.LiveOutput:
    """Output chunks for this command, signed and sent where its result goes."""
    request = current_task.request
    reply_queue = spec.reply_queue or agent.settings.results_queue

    def send(chunk) -> None:
        current_task.app.send_task(names.TASK_OUTPUT, args=[chunk.signed(agent.own_key())
                                   .to_wire()], queue=reply_queue)  # fmt: skip

    queue = (request.delivery_info or {}).get("routing_key") or spec.host
    return live.LiveOutput(send, request.id, queue, request.hostname or "",
                           keep=spec.keep_output_bytes)  # fmt: skip


def _ran(agent, spec: CommandSpec, cancelled, record) -> Report:
    result = runner.run_command(
        spec.command,
        timeout=float(spec.timeout),
        head_bytes=_capture_size(spec.head_bytes),
        tail_bytes=_capture_size(spec.tail_bytes),
        max_output_bytes=spec.max_output_bytes,
        # Cancel is cooperative: the runner polls the operator's mark and kills the command's
        # process group. (A SIGUSR1 from revoke(terminate=True) could land anywhere in Celery's
        # own code, such as while it publishes the result.)
        cancelled=cancelled,
        # Only the soft time limit backstop raises this now: the runner's own timeout failed.
        interrupts=(SoftTimeLimitExceeded,),
        spool_dir=agent.settings.spool_dir,
        on_start=record,
        live=_live(agent, spec),
    )
    outcome, error = result.outcome, result.error
    if outcome == Outcome.CANCELLED and not cancelled():
        outcome, error = Outcome.TIMEOUT, E_BACKSTOP
    return Report(task_id="", outcome=outcome, exit_code=result.exit_code, stdout=result.stdout,
                  stderr=result.stderr, started_at=result.started_at,
                  finished_at=result.finished_at, duration=result.duration, error=error,
                  pid=result.pid)  # fmt: skip


def _summary(ok: bool, stdout: str, stderr: str, started: float, clock: float, error: str,
             **fields) -> Report:  # fmt: skip
    """The report of work that is not a command: a summary line, ok or error."""
    return Report(
        task_id="", outcome=Outcome.OK if ok else Outcome.ERROR, exit_code=0 if ok else None,
        stdout=Stream.text(stdout), stderr=Stream.text(stderr), started_at=started,
        finished_at=time.time(), duration=time.monotonic() - clock, error="" if ok else error,
        **fields,
    )  # fmt: skip


def _collect(agent, spec: CollectSpec, cancelled) -> Report:
    started, clock = time.time(), time.monotonic()
    report = collectors.collect(spec.plugins or None)
    facts, errors = report.get("facts", {}), report.get("errors", {})
    summary = f"collected {', '.join(sorted(facts)) or 'nothing'}\n"
    stderr = "".join(f"{name}: {e.get('error')}\n" for name, e in sorted(errors.items()))
    return _summary(bool(facts), summary, stderr, started, clock, E_ALL_PLUGINS_FAILED,
                    facts_report=report)  # fmt: skip


def _transferred(outcome: dict, started: float, clock: float, **fields) -> Report:
    """A push or fetch outcome as a report: ok (verified, skipped, sent) or error."""
    ok = TransferOutcome(outcome["outcome"]).ok
    text = f"{outcome['outcome']}: {outcome.get('detail', '')}\n"
    return _summary(ok, text, "", started, clock, outcome.get("detail", "failed"),
                    transfer=outcome, **fields)  # fmt: skip


def _push(agent, spec: PushSpec, cancelled) -> Report:
    started, clock = time.time(), time.monotonic()
    common = {"mode": spec.mode, "owner": spec.owner, "root": agent.settings.root,
              "allow_unsafe_parents": spec.allow_unsafe_parents}  # fmt: skip
    if spec.tree:
        outcome = placing.receive_tree(agent.redis(), spec.manifest, spec.dest,
                                       files=spec.files or {}, **common)  # fmt: skip
    else:
        outcome = placing.receive_file(agent.redis(), spec.manifest, spec.dest, **common)
    return _transferred(outcome, started, clock)


def _fetch(agent, spec: FetchSpec, cancelled) -> Report:
    started, clock = time.time(), time.monotonic()
    outcome = placing.send_file(agent.redis(), spec.path, root=agent.settings.root,
                                namespace=names.fetch_namespace(spec.job, spec.host),
                                max_bytes=spec.max_bytes or math.inf)  # fmt: skip
    manifest = outcome.get("manifest")
    return _transferred(outcome, started, clock, fetch_manifest=manifest)


def _host_task(task, spec, body, announce_late: bool = False) -> dict:
    """Run ``body`` for a host task; whatever happens, return a report for the server."""
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    sender = {"task_id": task.request.id, "host": queue, "agent": task.request.hostname or ""}
    try:
        report = guard.guarded(agent, task, spec, queue, body, CLAIM_TTL, announce_late)
    except guard.Unauthentic as refused:
        # Not the server's message: said unsigned (the log has it), believed by nobody.
        return refused.report.with_sender(**sender, agent_pid=agent.pid).to_wire()
    except Exception as exc:
        logger.exception("%s %s failed inside the agent", task.name, task.request.id)
        report = Report.refusal(Outcome.ERROR, E_INTERNAL.format(exc=exc),
                                traceback=traceback.format_exc(limit=20))  # fmt: skip
    # Signed over everything, its task id and host included: the server believes a report only
    # when the key it accepted for the host this task was sent to verifies it. Only for a
    # message the server signed for this host (guard.Unauthentic above), so every signed
    # report answers one of the server's own messages.
    return report.with_sender(**sender, agent_pid=agent.pid).signed(agent.own_key()).to_wire()


@app.task(name=names.RUN_COMMAND, bind=True, ignore_result=True, acks_late=False)
def run_command(self, spec: dict) -> dict:
    """Run one shell command for one host task and return everything about how it ended."""
    return _host_task(self, spec, _run, announce_late=True)


@app.task(name=names.COLLECT_FACTS, bind=True, ignore_result=True, acks_late=False)
def collect_facts(self, spec: dict) -> dict:
    """Collect this host's facts with the plugins the spec names (only ones under collectors.)."""
    return _host_task(self, spec, _collect)


@app.task(name=names.PUSH_FILES, bind=True, ignore_result=True, acks_late=False)
def push_files(self, spec: dict) -> dict:
    """Receive a pushed file or folder: verified by sha256, renamed into place atomically."""
    return _host_task(self, spec, _push)


@app.task(name=names.FETCH_FILE, bind=True, ignore_result=True, acks_late=False)
def fetch_file(self, spec: dict) -> dict:
    """Send one of this host's files to the server, in chunks through the broker."""
    return _host_task(self, spec, _fetch)


@worker_ready.connect
def _register_with_server(sender=None, **_):
    """Tell the server which hosts this agent serves: one message per IP queue it consumes;
    and end what a dead predecessor left running, telling the server of each."""
    agent_app = getattr(sender, "app", app)
    if agent_app.main != app.main:
        return
    _reap_orphans(agent_app, getattr(sender, "hostname", "") or "")
    for name in agent_app.amqp.queues.consume_from or {}:
        try:
            ip = validate_ipv4(name)
        except ValueError:
            continue
        key = agent.own_key()
        registration = Registration(ip=ip, hostname=socket.gethostname(),
                                    agent=getattr(sender, "hostname", "") or "",
                                    agent_pid=os.getpid(), started_at=time.time(),
                                    pubkey=signing.public_pem(key).decode())  # fmt: skip
        agent_app.send_task(names.REGISTER_AGENT, args=[registration.signed(key).to_wire()],
                            queue=agent.settings.central_queue)  # fmt: skip


def _reap_orphans(agent_app, hostname: str) -> None:
    try:
        found = agent.running().reap()
    except OSError as exc:
        logger.error("could not look for commands a dead agent left running: %s", exc)
        return
    for orphan in found:
        if orphan.host not in agent.identity:
            continue  # not a host this agent may speak for (its broker user could not, either)
        report = Report.refusal(Outcome.ERROR, orphan.error, task_id=orphan.task_id,
                                host=orphan.host, agent=hostname, agent_pid=agent.pid,
                                reaped=True)  # fmt: skip
        agent_app.send_task(names.STORE_RESULT, args=[report.signed(agent.own_key()).to_wire()],
                            queue=agent.settings.results_queue)  # fmt: skip
