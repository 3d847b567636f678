"""Tasks executed on the managed host. They never raise: every outcome is a structured result."""

import logging
import os
import socket
import time
import traceback

import redis
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_init, worker_process_init, worker_ready

from workers import config, runner
from workers.celery import app
from workers.identity import validate_ipv4

logger = logging.getLogger(__name__)

#: Largest head/tail a dispatcher may ask for: results travel through the broker.
MAX_CAPTURE_BYTES = 1 << 20

E_WRONG_HOST = "message for host {wanted} reached the agent consuming {queue}; refused"
E_CANCELLED = "cancelled before it started"
E_BAD_SPEC = "malformed task: {reason}"
E_INTERNAL = "agent error: {exc!r}"

# The worker's main process id, recorded before the pool forks: the server compares it with the
# pid in heartbeats to tell a restarted agent (whose running commands are lost) from a live one.
_agent_pid = os.getpid()
_redis = None


@worker_init.connect
def _remember_agent_pid(**_):
    global _agent_pid
    _agent_pid = os.getpid()


@worker_process_init.connect
def _reset_clients(**_):
    # A client created before fork shares its socket with the parent; make one per child.
    global _redis
    _redis = None


def _redis_client():
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(app.conf.broker_url, socket_timeout=5)
    return _redis


def _was_cancelled(task_id: str) -> bool:
    try:
        return bool(_redis_client().exists(config.CANCELLED_KEY.format(task_id=task_id)))
    except redis.RedisError:
        # The broker just delivered this message; if Redis is flaky now, running is the
        # behaviour the operator asked for.
        logger.warning("could not check whether %s was cancelled", task_id, exc_info=True)
        return False


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


def _execute(task, spec: dict, queue: str) -> dict:
    command = spec.get("command")
    if not isinstance(command, str) or not command.strip():
        return _refusal(runner.Outcome.ERROR, E_BAD_SPEC.format(reason="empty command"))
    wanted = spec.get("host")
    if wanted != queue:
        # A message re-targeted to another host's queue must not run here.
        return _refusal(runner.Outcome.ERROR, E_WRONG_HOST.format(wanted=wanted, queue=queue))
    if _was_cancelled(task.request.id):
        return _refusal(runner.Outcome.CANCELLED, E_CANCELLED)
    reply_queue = spec.get("reply_queue") or config.results_queue()
    task.app.send_task(
        config.TASK_STARTED,
        args=[
            {
                "task_id": task.request.id,
                "host": queue,
                "agent": task.request.hostname,
                "agent_pid": _agent_pid,
                "started_at": time.time(),
            }
        ],
        queue=reply_queue,
    )
    result = runner.run_command(
        command,
        timeout=float(spec["timeout"]),
        head_bytes=_capture_size(spec, "head_bytes"),
        tail_bytes=_capture_size(spec, "tail_bytes"),
        max_output_bytes=int(spec.get("max_output_bytes", 1 << 30)),
        # Cancel arrives as revoke(terminate=True, signal="SIGUSR1"), which Celery turns into
        # SoftTimeLimitExceeded here; the runner then kills the command's whole process group.
        interrupts=(SoftTimeLimitExceeded,),
        spool_dir=os.environ.get("CMDB_SPOOL_DIR") or None,
    )
    return result.to_dict()


@app.task(name=config.RUN_COMMAND, bind=True, ignore_result=True, acks_late=False)
def run_command(self, spec: dict) -> dict:
    """Run one shell command for one host task and return everything about how it ended.

    The return value travels to the central worker as the first argument of the link callback
    the dispatcher attached, so it must be JSON and must exist even when things go wrong.
    """
    queue = (self.request.delivery_info or {}).get("routing_key") or ""
    try:
        if not isinstance(spec, dict):
            raise TypeError("spec is not an object")
        payload = _execute(self, spec, queue)
    except Exception as exc:
        logger.exception("run_command %s failed inside the agent", self.request.id)
        payload = _refusal(runner.Outcome.ERROR, E_INTERNAL.format(exc=exc))
        payload["traceback"] = traceback.format_exc(limit=20)
    payload.update(
        task_id=self.request.id,
        host=queue,
        agent=self.request.hostname,
        agent_pid=_agent_pid,
    )
    return payload


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
