"""The salt gateway: an agent for the hosts that run a Salt minion instead of ours.

    CMDB_SALT_API_URL=https://salt.example:8000 ... python -m gateway --salt

One Celery worker on the server side consumes the IP queues of salt-mode hosts (`hosts add IP
--mode salt --minion ID`; hosts added later within seconds, gateway.serving.NewHosts), exactly
as their agent would: the same signed task messages checked by the same guard (the server's
signature, the host, the run-once claims, the cancel mark), the same reports signed with the
gateway's key (accepted for each salt-mode host when it is added) through the same intake. Only
the body differs: salt-api's `local` client runs `cmd.run_all` (commands, inside
workers.salt_wrapper) or the functions collectors.grains maps (collections) on the minion the
inventory records for that host when the task runs: never a name the message or the
environment gives.

Not in salt mode: push and fetch (refused with E_NO_FILES).
"""

import binascii
import logging
import os
import threading
import time

from celery import current_task
from celery.signals import worker_init
from django.conf import settings
from django.db import close_old_connections

from cmdb.hosts.choices import ModeChoices
from cmdb.hosts.models import Host
from collectors.grains import SALT_FUNCTIONS, report_from_salt
from gateway import serving
from wire import names, signing
from wire.messages import MAX_CAPTURE_BYTES, CollectSpec, CommandSpec, Outcome, Report, Stream
from workers import guard, salt_wrapper, saltapi
from workers.saltapi import SaltApi, SaltApiError, read_password

logger = logging.getLogger(__name__)

E_NO_URL = "CMDB_SALT_API_URL is not set: the salt gateway has no salt-api to talk to"
E_NOT_SALT = "{ip} is not a salt-mode host (any more); refused"
E_BAD_MINION = ("{ip}: the recorded minion id {minion!r} is not one (letters, digits, '.', '-', "
                "'_'; no glob characters); refused")  # fmt: skip
E_NO_FILES = "{what} is not supported in salt mode (host {host}, minion {minion})"
E_NO_ANSWER = "unreachable: salt minion {minion!r} did not answer the master ({why})"
E_NOT_MATCHED = "unreachable: the salt master knows no minion {minion!r} (not accepted, or down)"
E_SALT = "salt: {reason}"
E_NOTHING = "every collector plugin failed"
E_TIMED_OUT = "timed out after {s:.0f} s: its process group was killed on the host"
E_NO_SPOOL = "could not spool the command's output on the host ({reason}): not run"
E_WRAPPER = "the host's answer was not understood ({reason}); raw head: {head!r}"
E_CANCELLED_RUNNING = "cancelled while it ran: its process group was killed on the host"
#: Seconds past the command's own deadline (the wrapper's watchdog) that salt's kills the shell.
SALT_BACKSTOP = 30


class SaltGateway(serving.Gateway):
    mode, over = ModeChoices.SALT, "through salt"

    def __init__(self, app, settings_):
        super().__init__(app, settings_)
        self.api: SaltApi | None = None

    def connect_api(self) -> SaltApi:
        """salt-api's client; the password file read (and checked) once, at the start."""
        c = settings.CMDB
        if not c["SALT_API_URL"]:
            raise SaltApiError(E_NO_URL)
        password_file = c["SALT_API_PASSWORD_FILE"]
        password = read_password(password_file) if password_file else ""
        self.api = SaltApi(c["SALT_API_URL"], c["SALT_API_USER"], c["SALT_API_EAUTH"], password)
        return self.api

    def minion(self, ip: str) -> tuple[str | None, str | None]:
        """(the minion id the inventory records for ``ip`` now, None) or (None, why not)."""
        close_old_connections()
        row = Host.objects.filter(ip=ip, mode=ModeChoices.SALT).values_list("salt_minion").first()
        if row is None:
            return None, E_NOT_SALT.format(ip=ip)
        if not names.MINION_ID.fullmatch(row[0]):
            # `hosts add` refuses such an id; a row written otherwise must not glob many.
            return None, E_BAD_MINION.format(ip=ip, minion=row[0])
        return row[0], None


_settings = serving.gateway_settings(settings.CMDB["SALT_CONCURRENCY"], "salt-gateway")
app = serving.gateway_app("salt_gateway", _settings)
gateway = SaltGateway(app, _settings)
serving.serve(app, gateway)


def _refusal(error: str, started: float, clock: float, outcome=Outcome.ERROR) -> Report:
    return Report(task_id="", outcome=outcome, exit_code=None, stdout=Stream.text(""),
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
    reply = settings.CMDB["SALT_REPLY_TIMEOUT"]
    try:
        returns = gateway.api.run(saltapi.local(minion, fun, arg, reply, kwarg),
                                  timeout=wait + reply + 30)  # fmt: skip
    except SaltApiError as exc:
        return None, (Outcome.ERROR, E_SALT.format(reason=exc))
    # Only the answer of the minion asked for counts (tgt_type list: no other can answer).
    answer = returns.get(minion) if isinstance(returns, dict) else None
    why = _unreachable(answer, minion)
    if why:
        return None, (Outcome.UNREACHABLE, why)
    return answer, None


def _kill(minion: str, task_id: str) -> None:
    _, failed = call_minion(minion, "cmd.run", [salt_wrapper.kill_script(task_id)],
                            {"python_shell": True, "shell": "/bin/sh"}, wait=10)  # fmt: skip
    if failed:
        logger.warning("could not cancel %s on %s: %s", task_id, minion, failed[1])


def _command(gw: SaltGateway, spec: CommandSpec, cancelled) -> Report:
    started, clock = time.time(), time.monotonic()
    minion, why = gw.minion(spec.host)
    if why:
        return _refusal(why, started, clock)
    if cancelled():  # also the started notice (announce_late): the command is about to run
        return _refusal(guard.E_CANCELLED, started, clock, Outcome.CANCELLED)
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

    def ask() -> None:
        done["r"] = call_minion(minion, "cmd.run_all", [script], kwarg,
                                wait=seconds + SALT_BACKSTOP)  # fmt: skip

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
        return _refusal(failed[1], started, clock, failed[0])
    if not isinstance(answer, dict) or "retcode" not in answer:
        return _refusal(E_SALT.format(reason=str(answer)[:500]), started, clock)
    raw, exit_code = answer.get("stdout") or "", answer.get("retcode")
    if exit_code == salt_wrapper.NO_SPOOL and (reason := salt_wrapper.no_spool(raw)):
        return _refusal(E_NO_SPOOL.format(reason=reason), started, clock)
    try:
        how, stdout, stderr = salt_wrapper.unwrap(raw)
    except (ValueError, IndexError, KeyError, binascii.Error) as exc:
        return _refusal(E_WRAPPER.format(reason=exc, head=raw[:200]), started, clock)
    ended = {"stdout": stdout, "stderr": stderr, "started_at": started,
             "finished_at": time.time(), "duration": time.monotonic() - clock}  # fmt: skip
    if how in ("T", "C"):
        outcome = Outcome.TIMEOUT if how == "T" else Outcome.CANCELLED
        error = E_TIMED_OUT.format(s=seconds) if how == "T" else E_CANCELLED_RUNNING
        return Report(task_id="", outcome=outcome, exit_code=None, error=error, **ended)
    outcome = Outcome.OK if exit_code == 0 else Outcome.FAILED
    return Report(task_id="", outcome=outcome, exit_code=exit_code, error="",
                  pid=answer.get("pid"), **ended)  # fmt: skip


def _collect(gw: SaltGateway, spec: CollectSpec, cancelled) -> Report:
    started, clock = time.time(), time.monotonic()
    minion, why = gw.minion(spec.host)
    if why:
        return _refusal(why, started, clock)
    answer, failed = call_minion(minion, list(SALT_FUNCTIONS), [[] for _ in SALT_FUNCTIONS])
    if failed:
        return _refusal(failed[1], started, clock, failed[0])
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
    def body(gw: SaltGateway, spec, cancelled) -> Report:
        started, clock = time.time(), time.monotonic()
        minion, _ = gw.minion(spec.host)
        return _refusal(E_NO_FILES.format(what=what, host=spec.host, minion=minion or "?"),
                        started, clock)  # fmt: skip

    return body


@app.task(name=names.RUN_COMMAND, bind=True, ignore_result=True, acks_late=False)
def run_command(self, spec: dict) -> dict:
    return serving.host_task(gateway, self, spec, _command, announce_late=True)


@app.task(name=names.COLLECT_FACTS, bind=True, ignore_result=True, acks_late=False)
def collect_facts(self, spec: dict) -> dict:
    return serving.host_task(gateway, self, spec, _collect)


@app.task(name=names.PUSH_FILES, bind=True, ignore_result=True, acks_late=False)
def push_files(self, spec: dict) -> dict:
    return serving.host_task(gateway, self, spec, _no_files("push"))


@app.task(name=names.FETCH_FILE, bind=True, ignore_result=True, acks_late=False)
def fetch_file(self, spec: dict) -> dict:
    return serving.host_task(gateway, self, spec, _no_files("fetch"))


@worker_init.connect
def _started(sender=None, **_):
    if getattr(getattr(sender, "app", None), "main", None) != app.main:
        return
    try:
        gateway.started(sender)
    except (signing.SigningKeyError, OSError) as exc:
        raise SystemExit(f"salt gateway: {exc}") from None


def main(node: str = "", loglevel: str = "info") -> None:
    try:
        gateway.connect_api()  # a wrong URL or password file stops it here, saying which
    except SaltApiError as exc:
        raise SystemExit(f"salt gateway: {exc}") from None
    node = node or f"salt-gateway@{os.uname().nodename}"
    app.worker_main(gateway.argv(loglevel, node))
