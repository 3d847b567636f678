"""The salt gateway: an agent for hosts that run a Salt minion instead of ours.

    CMDB_SALT_MINIONS=10.0.8.5=web01 CMDB_SALT_API_URL=... python -m workers.salt_gateway

One Celery worker consumes the IP queues of salt-mode hosts, exactly as their agent would: the
same signed task messages checked by the same guard (workers.guard: the server's signature, the
host, the run-once claims, the cancel mark), the same reports signed with its own key (accepted
per host with `manage.py keys accept`, as an agent's) and sent through the same intake. Only the
body differs: salt-api's `local` client runs `cmd.run_all` (commands) or the functions
collectors.grains maps (collections) on the host's minion.

Not in salt mode: push and fetch (refused with E_NO_FILES), and cancelling a command already
running (salt-api's synchronous call cannot be interrupted; its timeout still ends it).
"""

from __future__ import annotations

import argparse
import binascii
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import replace

from celery import Celery, current_task
from celery.signals import worker_init, worker_process_init, worker_ready

from collectors.grains import SALT_FUNCTIONS, report_from_salt
from wire import names, signing, transport
from wire.messages import (
    MAX_CAPTURE_BYTES,
    CollectSpec,
    CommandSpec,
    Outcome,
    Registration,
    Report,
    Stream,
)
from workers import claims, guard, salt_wrapper, saltapi
from workers.agent import Agent
from workers.alive import heartbeat_step
from workers.config import AgentSettings, SaltSettings
from workers.connections import share_connections
from workers.saltapi import SaltApi, SaltApiError, read_password

logger = logging.getLogger(__name__)

E_NO_FILES = "{what} is not supported in salt mode (host {host}, minion {minion})"
E_NO_MINION = "no minion configured for host {host} (CMDB_SALT_MINIONS)"
E_NO_ANSWER = "unreachable: salt minion {minion!r} did not answer the master ({why})"
E_NOT_MATCHED = "unreachable: the salt master knows no minion {minion!r} (not accepted, or down)"
E_SALT = "salt: {reason}"
E_NOTHING = "every collector plugin failed"
E_TIMED_OUT = "timed out after {s:.0f} s: its process group was killed on the host"

GATEWAY_NAME = "salt_gateway"
_settings = AgentSettings.from_environ()
salt_settings = SaltSettings.from_environ()

app = Celery(GATEWAY_NAME, fixups=[])
app.config_from_object(_settings.celery_config())
app.conf.update(result_backend=None, task_ignore_result=True, worker_send_task_events=False,
                worker_disable_rate_limits=True)  # fmt: skip
gateway = Agent(app, _settings)
app.steps["consumer"].add(heartbeat_step(gateway))
_api: SaltApi | None = None


def salt_api() -> SaltApi:
    global _api
    if _api is None:
        s = salt_settings
        password = read_password(s.password_file) if s.password_file else ""
        _api = SaltApi(s.api_url, s.user, s.eauth, password)
    return _api


def _refusal(error: str, started: float, clock: float) -> Report:
    return Report(task_id="", outcome=Outcome.ERROR, exit_code=None, stdout=Stream.text(""),
                  stderr=Stream.text(""), started_at=started, finished_at=time.time(),
                  duration=time.monotonic() - clock, error=error)  # fmt: skip


def _unreachable(answer, minion: str) -> str | None:
    """Why the minion gave no answer, or None if ``answer`` is one."""
    if answer is None:
        return E_NOT_MATCHED.format(minion=minion)
    if isinstance(answer, str) and answer.startswith("Minion did not return"):
        why = answer.split("\n", 1)[0].removeprefix("Minion did not return. ").strip("[]")
        return E_NO_ANSWER.format(minion=minion, why=why)
    return None


def call_minion(minion: str, fun, arg, kwarg=None, wait: float = 60.0):
    """(answer, None) or (None, (outcome, error)) for one call on one minion."""
    lowstate = saltapi.local(minion, fun, arg, salt_settings.reply_timeout, kwarg)
    try:
        returns = salt_api().run(lowstate, timeout=wait + salt_settings.reply_timeout + 30)
    except SaltApiError as exc:
        return None, (Outcome.ERROR, E_SALT.format(reason=exc))
    answer = returns.get(minion) if isinstance(returns, dict) else None
    why = _unreachable(answer, minion)
    if why:
        return None, (Outcome.UNREACHABLE, why)
    return answer, None


E_NO_SPOOL = "could not spool the command's output on the host (mktemp failed): not run"
E_WRAPPER = "the host's answer was not understood ({reason}); raw head: {head!r}"
E_CANCELLED_RUNNING = "cancelled while it ran: its process group was killed on the host"
#: Seconds past the command's own deadline (the wrapper's watchdog) that salt's kills the shell.
SALT_BACKSTOP = 30


def _kill(minion: str, task_id: str) -> None:
    _, failed = call_minion(minion, "cmd.run", [salt_wrapper.kill_script(task_id)],
                            {"python_shell": True, "shell": "/bin/sh"}, wait=10)  # fmt: skip
    if failed:
        logger.warning("could not cancel %s on %s: %s", task_id, minion, failed[1])


def _command(agent, spec: CommandSpec, cancelled) -> Report:
    started, clock = time.time(), time.monotonic()
    minion = salt_settings.minions.get(spec.host)
    if not minion:
        return _refusal(E_NO_MINION.format(host=spec.host), started, clock)
    if cancelled():  # also the started notice (announce_late): the command is about to run
        return replace(_refusal(guard.E_CANCELLED, started, clock), outcome=Outcome.CANCELLED)
    seconds = max(1, int(spec.timeout))
    head = max(0, min(spec.head_bytes, MAX_CAPTURE_BYTES, salt_wrapper.MAX_PART))
    tail = max(0, min(spec.tail_bytes, MAX_CAPTURE_BYTES, salt_wrapper.MAX_PART))
    task_id = current_task.request.id
    script = salt_wrapper.wrapped(spec.command, task_id, seconds, head, tail)
    kwarg = {"timeout": seconds + SALT_BACKSTOP, "python_shell": True, "rstrip": False,
             "shell": "/bin/sh"}  # fmt: skip
    # The call waits for the command; meanwhile this thread watches the operator's cancel mark
    # and, when it is set, kills the command's process group on the host (salt_wrapper).
    done: dict = {}
    wait = seconds + SALT_BACKSTOP

    def ask() -> None:
        done["r"] = call_minion(minion, "cmd.run_all", [script], kwarg, wait=wait)

    call = threading.Thread(target=ask, daemon=True)
    call.start()
    killed = False
    while call.is_alive():
        call.join(0.5)
        if call.is_alive() and not killed and cancelled():
            killed = True
            _kill(minion, task_id)
    answer, failed = done["r"]
    if failed:
        return replace(_refusal(failed[1], started, clock), outcome=failed[0])
    if not isinstance(answer, dict) or "retcode" not in answer:
        return _refusal(E_SALT.format(reason=str(answer)[:500]), started, clock)
    raw, exit_code = answer.get("stdout") or "", answer.get("retcode")
    if exit_code == salt_wrapper.NO_SPOOL and not raw:
        return _refusal(E_NO_SPOOL, started, clock)
    try:
        how, stdout, stderr = salt_wrapper.unwrap(raw)
    except (ValueError, IndexError, KeyError, binascii.Error) as exc:
        return _refusal(E_WRAPPER.format(reason=exc, head=raw[:200]), started, clock)
    if how in ("T", "C"):
        outcome = Outcome.TIMEOUT if how == "T" else Outcome.CANCELLED
        error = E_TIMED_OUT.format(s=seconds) if how == "T" else E_CANCELLED_RUNNING
        return Report(task_id="", outcome=outcome, exit_code=None, stdout=stdout,
                      stderr=stderr, started_at=started, finished_at=time.time(),
                      duration=time.monotonic() - clock, error=error)  # fmt: skip
    outcome = Outcome.OK if exit_code == 0 else Outcome.FAILED
    return Report(task_id="", outcome=outcome, exit_code=exit_code, stdout=stdout,
                  stderr=stderr, started_at=started, finished_at=time.time(),
                  duration=time.monotonic() - clock, error="",
                  pid=answer.get("pid"))  # fmt: skip


def _collect(agent, spec: CollectSpec, cancelled) -> Report:
    started, clock = time.time(), time.monotonic()
    minion = salt_settings.minions.get(spec.host)
    if not minion:
        return _refusal(E_NO_MINION.format(host=spec.host), started, clock)
    answer, failed = call_minion(minion, list(SALT_FUNCTIONS), [[] for _ in SALT_FUNCTIONS])
    if failed:
        return replace(_refusal(failed[1], started, clock), outcome=failed[0])
    if not isinstance(answer, dict):
        return _refusal(E_SALT.format(reason=str(answer)[:500]), started, clock)
    report = report_from_salt(answer, plugins=spec.plugins or None)
    facts, errors = report["facts"], report["errors"]
    ok = bool(facts)
    summary = f"collected {', '.join(sorted(facts)) or 'nothing'} (salt minion {minion})\n"
    stderr = "".join(f"{name}: {e.get('error')}\n" for name, e in sorted(errors.items()))
    return Report(task_id="", outcome=Outcome.OK if ok else Outcome.ERROR,
                  exit_code=0 if ok else None, stdout=Stream.text(summary),
                  stderr=Stream.text(stderr), started_at=started, finished_at=time.time(),
                  duration=time.monotonic() - clock,
                  error="" if ok else E_NOTHING, facts_report=report)  # fmt: skip


def _no_files(what: str):
    def body(agent, spec, cancelled) -> Report:
        started, clock = time.time(), time.monotonic()
        minion = salt_settings.minions.get(spec.host, "?")
        return _refusal(E_NO_FILES.format(what=what, host=spec.host, minion=minion),
                        started, clock)  # fmt: skip

    return body


def _host_task(task, spec, body, announce_late: bool = False) -> dict:
    """As workers.tasks._host_task: whatever happens, a report for the server."""
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    sender = {"task_id": task.request.id, "host": queue, "agent": task.request.hostname or ""}
    try:
        report = guard.guarded(gateway, task, spec, queue, body, claims.KEEP,
                               announce_late)  # fmt: skip
    except guard.Unauthentic as refused:
        return refused.report.with_sender(**sender, agent_pid=gateway.pid).to_wire()
    except Exception as exc:
        logger.exception("%s %s failed inside the salt gateway", task.name, task.request.id)
        report = Report.refusal(Outcome.ERROR, f"salt gateway error: {exc!r}")
    return report.with_sender(**sender, agent_pid=gateway.pid).signed(gateway.own_key()).to_wire()


@app.task(name=names.RUN_COMMAND, bind=True, ignore_result=True, acks_late=False)
def run_command(self, spec: dict) -> dict:
    return _host_task(self, spec, _command, announce_late=True)


@app.task(name=names.COLLECT_FACTS, bind=True, ignore_result=True, acks_late=False)
def collect_facts(self, spec: dict) -> dict:
    return _host_task(self, spec, _collect)


@app.task(name=names.PUSH_FILES, bind=True, ignore_result=True, acks_late=False)
def push_files(self, spec: dict) -> dict:
    return _host_task(self, spec, _no_files("push"))


@app.task(name=names.FETCH_FILE, bind=True, ignore_result=True, acks_late=False)
def fetch_file(self, spec: dict) -> dict:
    return _host_task(self, spec, _no_files("fetch"))


def _ours(sender) -> bool:
    return getattr(getattr(sender, "app", None), "main", None) == GATEWAY_NAME


@worker_init.connect
def _start(sender=None, **_):
    if not _ours(sender):
        return
    share_connections()
    queues = sender.app.amqp.queues.consume_from or {}
    for queue in queues.values():
        queue.no_declare = True
    options = transport.agent_transport_options(queues)
    sender.app.conf.broker_transport_options = {**sender.app.conf.broker_transport_options,
                                                **options}  # fmt: skip
    gateway.started_worker(queues)
    if salt_settings.problems():
        raise SystemExit(f"salt gateway: {'; '.join(salt_settings.problems())}")
    try:
        gateway.server_key()
        gateway.own_key()
        salt_api()  # the password file, read (and checked) once before the pool forks
    except (signing.SigningKeyError, OSError, SaltApiError) as exc:
        raise SystemExit(f"salt gateway: {exc}") from None


@worker_process_init.connect
def _forked(**_):
    gateway.forked()


@worker_ready.connect
def _register(sender=None, **_):
    """One registration per host, signed with the gateway's key: the operator accepts it per
    host as an agent's (`manage.py keys accept`)."""
    if not _ours(sender):
        return
    key = gateway.own_key()
    for ip in sorted(gateway.identity):
        registration = Registration(ip=ip, hostname=salt_settings.minions.get(ip, ""),
                                    agent=getattr(sender, "hostname", "") or "",
                                    agent_pid=os.getpid(), started_at=time.time(),
                                    pubkey=signing.public_pem(key).decode())  # fmt: skip
        app.send_task(names.REGISTER_AGENT, args=[registration.signed(key).to_wire()],
                      queue=gateway.settings.central_queue)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.salt_gateway",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--pubkey", default=gateway.settings.pubkey)
    parser.add_argument("--concurrency", type=int, default=gateway.settings.concurrency)
    parser.add_argument("--loglevel", default=gateway.settings.loglevel)
    args, extra = parser.parse_known_args(argv)
    if not args.pubkey:
        parser.exit(2, f"salt gateway: {signing.E_NO_PUBKEY}\n")
    if not salt_settings.minions:
        parser.exit(2, "salt gateway: no hosts: set CMDB_SALT_MINIONS=IP=minion,...\n")
    for problem in salt_settings.problems():
        parser.exit(2, f"salt gateway: {problem}\n")
    gateway.use_pubkey(os.path.abspath(args.pubkey))
    app.worker_main(["worker", "--queues", ",".join(sorted(salt_settings.minions)),
                     "--hostname", f"salt-gateway@{socket.gethostname()}",
                     "--concurrency", str(args.concurrency), "--loglevel", args.loglevel,
                     "--without-gossip", "--without-mingle", "--without-heartbeat",
                     "--optimization", "fair", *extra])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
