"""Settings the agent and the server share: broker, wire format, queue and task names."""

import os

#: The broker when REDIS_URL is unset: the Redis that `make up` starts on loopback.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6389/0"

#: The queue the central worker consumes for everything but results (registrations, ...).
DEFAULT_CENTRAL_QUEUE = "cmdb.central"

# Task names are the contract between agents and the server; neither side imports the other's
# task functions, so the names live here once.
RUN_COMMAND = "workers.run_command"
COLLECT_FACTS = "workers.collect_facts"
PUSH_FILES = "workers.push_files"
FETCH_FILE = "workers.fetch_file"
STORE_RESULT = "cmdb.jobs.store_result"
TASK_STARTED = "cmdb.jobs.task_started"
REGISTER_AGENT = "cmdb.hosts.register_agent"

#: Redis key (outside Celery's keys) that marks a host task as cancelled, so that an agent which
#: missed the revoke broadcast (it was offline) still refuses the message when it comes back.
CANCELLED_KEY = "cmdb:cancelled:{task_id}"

#: Redis key an agent sets (NX) before running a task: a second delivery of it is refused.
CLAIMED_KEY = "cmdb:claimed:{task_id}"


def redis_url(environ=os.environ) -> str:
    return environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def central_queue(environ=os.environ) -> str:
    return environ.get("CMDB_CENTRAL_QUEUE") or DEFAULT_CENTRAL_QUEUE


def results_queue(environ=os.environ) -> str:
    """Where agents send "started" notices and results: the central worker's batch intake."""
    return environ.get("CMDB_RESULTS_QUEUE") or central_queue(environ) + ".results"


def celery_config(environ=os.environ) -> dict:
    """Celery settings common to agents and the server."""
    queue = central_queue(environ)
    return {
        "broker_url": redis_url(environ),
        # Celery's code default is None (a deprecation warning, then retrying forever).
        "broker_connection_retry_on_startup": True,
        # A broker that is down must be a quick, clear error at dispatch, never a hang.
        "broker_connection_timeout": float(environ.get("CMDB_BROKER_TIMEOUT", "4")),
        "broker_transport_options": {"socket_connect_timeout": 4, "socket_timeout": 30},
        # JSON only: a pickle message from anyone who reaches the broker would be code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # Nothing may land in the default "celery" queue that nobody consumes: anything
        # unrouted (callbacks included) goes to the central worker.
        "task_default_queue": queue,
        "task_create_missing_queues": True,
        # Shell commands must never run twice: ack on receipt (at most once). With acks_late a
        # command longer than Redis' visibility_timeout would be delivered again.
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        "timezone": "UTC",
        "enable_utc": True,
    }
