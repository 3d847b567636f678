"""The Celery settings agents and the server share (broker, wire format, acknowledgement), and
the broker's side of the same contract: what a host's agent may do in Redis (deploy/BROKER.md).
"""

import hashlib
import ssl
from urllib.parse import parse_qs, urlsplit

from wire import names


def celery_config(broker_url: str, central_queue: str, broker_timeout: float = 4.0,
                  socket_timeout: float = 30, master_name: str | None = None) -> dict:  # fmt: skip
    """Celery settings common to agents and the server, from values their settings read.
    ``socket_timeout``: how long a broker that accepted a connection may take to answer; the
    server's is short (a frozen broker must fail a dispatch in seconds), an agent's longer.
    ``master_name``: the Sentinel service of a ``sentinel://`` broker URL."""
    return {
        "broker_url": broker_url,
        "broker_use_ssl": tls_options(broker_url),
        # Celery's code default is None (a deprecation warning, then retrying forever).
        "broker_connection_retry_on_startup": True,
        # A broker that is down must be a quick, clear error at dispatch, never a hang.
        "broker_connection_timeout": broker_timeout,
        "broker_transport_options": {
            "socket_connect_timeout": 4,
            "socket_timeout": socket_timeout,
            # No message here has a priority: one Redis list per queue (kombu's default is four,
            # "<queue>\x06\x16<3|6|9>"), so that a host's broker user names its queue, no more.
            "priority_steps": [0],
            **sentinel_options(master_name, broker_timeout, socket_timeout),
        },
        # JSON only: a pickle message from anyone who reaches the broker would be code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # Nothing may land in the default "celery" queue that nobody consumes: anything
        # unrouted (callbacks included) goes to the central worker.
        "task_default_queue": central_queue,
        "task_create_missing_queues": True,
        # Shell commands must never run twice: ack on receipt (at most once). With acks_late a
        # command longer than Redis' visibility_timeout would be delivered again.
        "task_acks_late": False,
        "worker_prefetch_multiplier": 1,
        "timezone": "UTC",
        "enable_utc": True,
    }


def sentinel_options(master_name: str | None, connect_timeout: float, socket_timeout: float
                     ) -> dict:  # fmt: skip
    """kombu's transport options for a ``sentinel://`` URL (``sentinel://H:P;sentinel://H2:P2``,
    its first part's user and password for the master): the service to ask the sentinels for,
    and the same timeouts towards the sentinels as towards the master (redis-py's default for
    sentinels is none: one that is frozen would hang a dispatch for ever).

    No retries towards a sentinel: the next one named is the retry. redis-py's default retries
    a sentinel that is down for about 4 s, and kombu asks the sentinels afresh for every new
    connection, so one sentinel down made every dispatch and every reconnection step 4 s longer
    (tests/integration/test_sentinel.py names a dead one first)."""
    if not master_name:
        return {}
    sentinels = {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout,
                 "retry": None}  # fmt: skip
    return {"master_name": master_name, "sentinel_kwargs": sentinels}


def tls_options(broker_url: str) -> dict | None:
    """``broker_use_ssl`` for a ``rediss://`` URL that says nothing about certificates: verify
    the broker's against the system's CAs. kombu's own default for such a URL is no verification
    at all (CERT_NONE, with a warning), which anyone in the path could answer for the broker.
    A URL with ssl_* parameters is taken as it says (kombu gives them precedence)."""
    parts = urlsplit(broker_url)
    if parts.scheme != "rediss" or any(key.startswith("ssl_") for key in parse_qs(parts.query)):
        return None
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def agent_transport_options(hosts) -> dict:
    """The Redis transport options an agent for ``hosts`` adds to the shared ones: kombu's
    bookkeeping of unacknowledged messages under its own keys (names.UNACKED_KEYS)."""
    tag = names.hosts_tag(hosts)
    return {option: key.format(host=tag) for option, key in names.UNACKED_KEYS.items()}


def redacted(url: str) -> str:
    """A broker URL fit for a message or a log: never its password (in any of the ``;``-separated
    URLs of a Sentinel broker)."""
    return ";".join(_redacted_one(part) for part in url.split(";"))


def _redacted_one(url: str) -> str:
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


# --- The broker's ACL (Redis >= 7) ------------------------------------------------------------
#: The commands an agent sends, and nothing else (checked against a real agent in
#: tests/security/test_broker_acl.py; Redis' ACL LOG names anything missing):
AGENT_COMMANDS = (
    "ping", "select",  # the connection's own (AUTH and HELLO need no right)
    "brpop",  # consuming its queue
    "lpush", "rpush",  # publishing to the central worker; putting its own messages back
    "zadd", "zrem", "zrange", "hset", "hget", "hdel",  # kombu's unacked bookkeeping
    "multi", "exec", "discard", "watch", "unwatch",
    "evalsha", "script|load",  # the restore sweep's lock (redis-py's Lock releases by script)
    "set", "get", "exists", "expire", "del", "unlink",  # claims, cancel marks, blobs
    "publish",  # worker events: heartbeats
)  # fmt: skip


def agent_username(host: str) -> str:
    """The broker user of host ``host``'s agent."""
    return f"cmdb-agent-{host}"


def _glob_literal(text: str) -> str:
    # Redis ACL patterns are globs: a host or queue name is matched as itself.
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def agent_acl_rules(host: str, central_queue: str, results_queue: str, db: int = 0) -> list[str]:
    """The ACL rules (what follows its name and password, ``acl_user``) of the broker user of
    host ``host``'s agent: what the agent's own Celery settings and code touch, for that host.

    Reads and writes: its queue, its unacked bookkeeping, its run-once claims and its fetched
    files. Reads only: the cancel marks and pushed files (blobs are named by their sha256, and
    SCAN and KEYS are denied: a host reads the pushes whose content it knows). Writes only:
    the central worker's two queues (LPUSH; never read, so no other host's report). Publishes
    only worker events. No binding table, no other host's key, no pidbox channel (agents run
    without remote control), no subscribe, no admin command.
    """
    own = _glob_literal(host)
    tagged = names.hosts_tag([host])
    keys = [
        f"~{own}",
        *(f"~{_glob_literal(k.format(host=tagged))}" for k in names.UNACKED_KEYS.values()),
        "~" + names.CLAIMED_KEY.format(host=own, task_id="*"),
        # Job ids are integers and IPs and sha256s have no "-": this matches this host's only.
        "~cmdb:" + names.fetch_namespace("*", own) + ":*",
        "%R~" + names.CANCELLED_KEY.format(task_id="*"),
        "%R~cmdb:blob:*",  # wire.blobs.put_blob's default namespace: the server's pushes
        f"%W~{_glob_literal(central_queue)}",
        f"%W~{_glob_literal(results_queue)}",
    ]
    # kombu's fan-out topic "/<db>." + Celery's event exchange + "worker.<event>".
    channels = [f"&/{db}.celeryev/worker.*"]
    return ["-@all", *(f"+{c}" for c in AGENT_COMMANDS), *keys, *channels]


#: The server's user (the central worker, beat, the web and manage.py): everything.
SERVER_ACL_RULES = ["~*", "&*", "+@all"]


def acl_user(name: str, password: str, rules: list[str]) -> list[str]:
    """A whole user, as an aclfile line's words (``user NAME ...``) or ACL SETUSER's arguments
    (without ``user``): everything it had before is reset, the password is kept as its sha256."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return ["user", name, "reset", "on", f"#{digest}", *rules]
