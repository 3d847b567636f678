"""Names both sides must agree on: tasks, queues and the Redis keys outside Celery's own."""

import re

# Neither side imports the other's task functions, so the names live here once.
RUN_COMMAND = "workers.run_command"
COLLECT_FACTS = "workers.collect_facts"
PUSH_FILES = "workers.push_files"
FETCH_FILE = "workers.fetch_file"
#: Every task an agent (or a gateway standing in for one) runs for a host task.
AGENT_TASKS = (RUN_COMMAND, COLLECT_FACTS, PUSH_FILES, FETCH_FILE)

STORE_RESULT = "cmdb.jobs.store_result"
TASK_STARTED = "cmdb.jobs.task_started"
#: A running command's output so far (wire.messages.Output), to the same reply queue as its
#: result: the intake relays it to the job's event stream, in order, before the result.
TASK_OUTPUT = "cmdb.jobs.task_output"
REGISTER_AGENT = "cmdb.hosts.register_agent"

#: The worker event an agent's signed heartbeat travels as (workers.alive). "worker-" first:
#: a worker without task events sends only the "worker" group's.
HEARTBEAT_EVENT = "worker-cmdb-heartbeat"

#: The broker when nothing else is configured: the Redis that `make up` starts on loopback.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6389/0"
#: The queue the central worker consumes for everything but results (registrations, ...).
DEFAULT_CENTRAL_QUEUE = "cmdb.central"


def default_results_queue(central_queue: str) -> str:
    """Where agents send "started" notices and results unless told: the central worker's intake."""
    return central_queue + ".results"


#: Redis key that marks a host task as cancelled, so that an agent which missed the revoke
#: broadcast (it was offline) still refuses the message when it comes back.
CANCELLED_KEY = "cmdb:cancelled:{task_id}"

#: Redis stream of a job's events (output chunks the server believed, host tasks stored), which
#: `run --wait`, `check_task --follow` and the API's events endpoint read (cmdb.jobs.live).
EVENTS_KEY = "cmdb:events:{job}"

#: Redis hash of how many messages the server did not believe, by kind and reason
#: (cmdb.jobs.trust): forged, re-targeted or replayed reports and heartbeats.
DROPPED_KEY = "cmdb:dropped"

#: Redis key an agent sets (NX) before running a task: a second delivery of it is refused.
#: Under the task's host (its queue): the broker user of one host may write only its own
#: claims, so it cannot pre-claim another host's task ids and make them refused. The server
#: sets it too, at a task's reach deadline (CLAIMED_BY_SERVER): the fence that makes
#: "unreachable" provable, since an agent that finds it taken does not run the task.
CLAIMED_KEY = "cmdb:claimed:{host}:{task_id}"
CLAIMED_BY_SERVER = "server"

#: kombu's bookkeeping of the messages a consumer was given and has not acknowledged yet (its
#: Redis transport options), one set per agent: the default keys are shared by every consumer,
#: so any of them could read the others' messages in flight, the central worker's results too.
UNACKED_KEYS = {
    "unacked_key": "unacked:{host}",
    "unacked_index_key": "unacked_index:{host}",
    "unacked_mutex_key": "unacked_mutex:{host}",
}


def hosts_tag(hosts) -> str:
    """The hosts an agent serves (its identity) as one name in its own Redis keys: the IP,
    for the usual agent of one host."""
    return ",".join(sorted(hosts))


def fetch_namespace(job_id, host: str) -> str:
    """The blob namespace a host sends a fetched file under: one per job and host, so that two
    hosts with the same file do not share (and lose, when the server deletes it) one blob; the
    server stores only a blob in the namespace it asked that host to use."""
    return f"fetch-{job_id}-{host}"


#: A Salt minion id as the CMDB takes it (`hosts add --minion`, the salt gateway): no glob,
#: regex or list characters, so that a target is exactly one minion.
MINION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
