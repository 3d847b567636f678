"""The gateway's Celery app: it consumes the IP queues of ssh-mode hosts and answers each
message as that host's agent would, through the same checks (workers.guard: the server's
signature for that host's queue, the run-once claims, the cancel mark), with the same report,
signed with the gateway's key (the key accepted for every ssh-mode host), sent as the same link
callback to the same intake. The server does not know how a host was reached.

One process, a pool of threads (CMDB_SSH_CONCURRENCY), each waiting on the one asyncio loop
that holds every SSH connection (gateway.ssh).
"""

import concurrent.futures
import logging
import math
import os
import secrets
import tempfile
import threading
import time

import asyncssh
from celery.signals import worker_init
from django.conf import settings
from django.db import close_old_connections

from cmdb.hosts import ssh as keys
from cmdb.hosts.choices import ModeChoices
from cmdb.hosts.models import Host
from collectors import remote
from gateway import serving
from gateway.ssh import Engine, Target, Unreachable
from wire import blobs, names, signing
from wire.messages import MAX_CAPTURE_BYTES, Outcome, Report, Stream, TransferOutcome
from workers.placing import DETAIL_SENT

logger = logging.getLogger(__name__)

E_NOT_SSH = "{ip} is not an ssh-mode host (any more); refused"
E_ALL_PLUGINS_FAILED = "every collector plugin failed"
E_SCRIPT = "the facts script did not run to its end: {outcome}, {error}"
#: The most output the facts script may print (a host with thousands of CPUs, disks, links).
SCRIPT_MAX = 32 << 20


class Gateway(serving.Gateway):
    """The gateway of ssh-mode hosts: one asyncio loop (gateway.ssh) holds their connections."""

    mode, over = ModeChoices.SSH, "over SSH"

    def __init__(self, app, settings_):
        super().__init__(app, settings_)
        self._engine = None

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                keys.client_key()  # made (or refused) here, with the server's rules
                self._engine = Engine(str(keys.client_key_path()),
                                      settings.CMDB["SSH_CONNECT_TIMEOUT"])  # fmt: skip
            return self._engine

    def target(self, ip: str) -> Target | None:
        close_old_connections()
        row = (Host.objects.filter(ip=ip, mode=ModeChoices.SSH)
               .values_list("ssh_user", "ssh_port", "ssh_host_key").first())  # fmt: skip
        return Target(ip, *row) if row else None


_settings = serving.gateway_settings(settings.CMDB["SSH_CONCURRENCY"], "gateway")
app = serving.gateway_app("gateway", _settings)
gateway = Gateway(app, _settings)
serving.serve(app, gateway)


@worker_init.connect
def _started(sender=None, **_):
    if getattr(getattr(sender, "app", None), "main", None) != app.main:
        return
    try:
        gateway.started(sender)
        gateway.engine()
    except (signing.SigningKeyError, keys.SSHKeyError, OSError) as exc:
        raise SystemExit(f"gateway: {exc}") from None


def _capture(size: int) -> int:
    return max(0, min(size, MAX_CAPTURE_BYTES))


def _remote(gw: Gateway, spec, cancelled, command: str, head: int, tail: int, limit: int):
    """Run ``command`` on the spec's host: (Ran, None), or (None, the refusal's report)."""
    target = gw.target(spec.host)
    if target is None:
        return None, Report.refusal(Outcome.ERROR, E_NOT_SSH.format(ip=spec.host))
    engine = gw.engine()
    try:
        engine.call(engine.connect(target), timeout=engine.connect_timeout * 2 + 5)
    except Unreachable as exc:
        # Before any start notice: the task goes from pending to unreachable, nothing ran.
        return None, Report.refusal(Outcome.UNREACHABLE, str(exc))
    stop = threading.Event()
    asked = False
    future = engine.submit(engine.run(target, command, float(spec.timeout), head, tail, limit,
                                      stop))  # fmt: skip
    while True:
        try:
            return future.result(timeout=0.5), None
        except concurrent.futures.TimeoutError:
            # As the agent's runner: the first look at the cancel mark, half a second in, also
            # sends the start notice (most commands have ended by then).
            asked = True
            if cancelled():
                stop.set()
        except Unreachable as exc:
            outcome = Outcome.ERROR if asked else Outcome.UNREACHABLE
            return None, Report.refusal(outcome, str(exc))
        except RuntimeError as exc:
            return None, Report.refusal(Outcome.ERROR, str(exc))


def _run(gw: Gateway, spec, cancelled) -> Report:
    ran, refused = _remote(gw, spec, cancelled, spec.command, _capture(spec.head_bytes),
                           _capture(spec.tail_bytes), spec.max_output_bytes)  # fmt: skip
    if refused:
        return refused
    return Report(task_id="", outcome=ran.outcome, exit_code=ran.exit_code, stdout=ran.stdout,
                  stderr=ran.stderr, started_at=ran.started_at, finished_at=ran.finished_at,
                  duration=ran.duration, error=ran.error, pid=ran.pgid)  # fmt: skip


def _collect(gw: Gateway, spec, cancelled) -> Report:
    """Facts with no Python on the host: one script reads the raw sources (collectors.remote),
    the agent's own plugins parse them here, into the same report an agent sends."""
    started, clock = time.time(), time.monotonic()
    nonce = secrets.token_hex(16)
    ran, refused = _remote(gw, spec, cancelled, remote.script(nonce), SCRIPT_MAX, 0, SCRIPT_MAX)
    if refused:
        return refused
    if ran.outcome not in (Outcome.OK, Outcome.FAILED):
        return Report.refusal(ran.outcome, E_SCRIPT.format(outcome=ran.outcome, error=ran.error))
    report = remote.report(ran.stdout.head, nonce, spec.plugins or None)
    facts, errors = report.get("facts", {}), report.get("errors", {})
    ok = bool(facts)
    return Report(
        task_id="", outcome=Outcome.OK if ok else Outcome.ERROR, exit_code=0 if ok else None,
        stdout=Stream.text(f"collected {', '.join(sorted(facts)) or 'nothing'} over SSH\n"),
        stderr=Stream.text("".join(f"{n}: {e.get('error')}\n" for n, e in sorted(errors.items()))),
        started_at=started, finished_at=time.time(), duration=time.monotonic() - clock,
        error="" if ok else E_ALL_PLUGINS_FAILED, facts_report=report, pid=ran.pgid,
    )  # fmt: skip


def _push(gw: Gateway, spec, cancelled) -> Report:
    """A file, or a folder as one archive, placed as gateway.placing does it; its blob comes
    from the broker onto the gateway's disk (verified chunk by chunk) only when the host's
    copy is not equal already. The same outcome fields as the agent's."""
    started, clock = time.time(), time.monotonic()
    target = gw.target(spec.host)
    if target is None:
        return Report.refusal(Outcome.ERROR, E_NOT_SSH.format(ip=spec.host))
    engine = gw.engine()
    try:
        engine.call(engine.connect(target), timeout=engine.connect_timeout * 2 + 5)
    except Unreachable as exc:
        return Report.refusal(Outcome.UNREACHABLE, str(exc))
    future = None
    try:
        sha, size, _, _ = blobs.checked(spec.manifest)
        with tempfile.NamedTemporaryFile(dir=gw.settings.state_dir, prefix="push-") as local:

            def fetch() -> str:
                blobs.get_blob(gw.redis(), spec.manifest, local)
                local.flush()
                return local.name

            future = engine.submit(engine.push(
                target, fetch, spec.dest, tree=spec.tree, sha=sha, size=size,
                mode=spec.mode, owner=spec.owner, allow_unsafe=spec.allow_unsafe_parents,
                files=spec.files,
            ))  # fmt: skip
            outcome, detail = future.result(timeout=spec.timeout)
    except concurrent.futures.TimeoutError:  # first: an OSError too
        if future is not None:  # cancelled where it is: its private folder may be left
            future.cancel()
        outcome, detail, sha, size = "failed", f"timed out after {spec.timeout} s", "", 0
    except (blobs.TransferError, OSError, asyncssh.Error) as exc:
        outcome, detail, sha, size = "failed", str(exc), "", 0
    moved = {"outcome": outcome, "detail": detail}
    if outcome != "failed":
        moved.update(sha256=sha, bytes=size)
    return _transferred(moved, started, clock)


def _fetch(gw, spec, cancelled) -> Report:
    """As the agent's fetch (workers.placing.send_file): the file, verified, as a blob."""
    started, clock = time.time(), time.monotonic()
    target = gw.target(spec.host)
    if target is None:
        return Report.refusal(Outcome.ERROR, E_NOT_SSH.format(ip=spec.host))
    engine = gw.engine()
    try:
        engine.call(engine.connect(target), timeout=engine.connect_timeout * 2 + 5)
    except Unreachable as exc:
        return Report.refusal(Outcome.UNREACHABLE, str(exc))
    max_bytes = spec.max_bytes or math.inf
    try:
        with tempfile.NamedTemporaryFile(dir=gw.settings.state_dir, prefix="fetch-") as local:
            why = engine.call(engine.fetch_file(target, spec.path, local.name, max_bytes),
                              timeout=spec.timeout)  # fmt: skip
            if why is None:
                with open(local.name, "rb") as f:
                    namespace = names.fetch_namespace(spec.job, spec.host)
                    manifest = blobs.put_blob(gw.redis(), f, namespace=namespace,
                                              max_bytes=max_bytes)  # fmt: skip
    except concurrent.futures.TimeoutError:  # first: an OSError too
        why = f"timed out after {spec.timeout} s"
    except (blobs.TransferError, OSError, asyncssh.Error) as exc:
        why = str(exc)
    if why is not None:
        return _transferred({"outcome": "failed", "detail": why}, started, clock)
    sent = {"outcome": "sent", "manifest": manifest, "detail": DETAIL_SENT.format(**manifest)}
    return _transferred(sent, started, clock, fetch_manifest=manifest)


def _transferred(outcome: dict, started: float, clock: float, **fields) -> Report:
    ok = TransferOutcome(outcome["outcome"]).ok
    detail = outcome.get("detail", "")
    return Report(
        task_id="", outcome=Outcome.OK if ok else Outcome.ERROR, exit_code=0 if ok else None,
        stdout=Stream.text(f"{outcome['outcome']}: {detail}\n"), stderr=Stream.text(""),
        started_at=started, finished_at=time.time(), duration=time.monotonic() - clock,
        error="" if ok else detail or "failed", transfer=outcome, **fields,
    )  # fmt: skip


def _host_task(task, spec, body, announce_late: bool = False) -> dict:
    return serving.host_task(gateway, task, spec, body, announce_late)


@app.task(name=names.RUN_COMMAND, bind=True, ignore_result=True, acks_late=False)
def run_command(self, spec: dict) -> dict:
    return _host_task(self, spec, _run, announce_late=True)


@app.task(name=names.COLLECT_FACTS, bind=True, ignore_result=True, acks_late=False)
def collect_facts(self, spec: dict) -> dict:
    return _host_task(self, spec, _collect)


@app.task(name=names.PUSH_FILES, bind=True, ignore_result=True, acks_late=False)
def push_files(self, spec: dict) -> dict:
    return _host_task(self, spec, _push)


@app.task(name=names.FETCH_FILE, bind=True, ignore_result=True, acks_late=False)
def fetch_file(self, spec: dict) -> dict:
    return _host_task(self, spec, _fetch)


def main(node: str = "", loglevel: str = "info") -> None:
    node = node or f"gateway@{os.uname().nodename}"
    app.worker_main(gateway.argv(loglevel, node))
