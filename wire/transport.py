"""The Celery settings agents and the server share (broker, wire format, acknowledgement)."""


def celery_config(broker_url: str, central_queue: str, broker_timeout: float = 4.0) -> dict:
    """Celery settings common to agents and the server, from values their settings read."""
    return {
        "broker_url": broker_url,
        # Celery's code default is None (a deprecation warning, then retrying forever).
        "broker_connection_retry_on_startup": True,
        # A broker that is down must be a quick, clear error at dispatch, never a hang.
        "broker_connection_timeout": broker_timeout,
        "broker_transport_options": {"socket_connect_timeout": 4, "socket_timeout": 30},
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


def redacted(url: str) -> str:
    """A broker URL fit for a message or a log: never its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
