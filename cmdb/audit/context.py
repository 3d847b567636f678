"""Who is acting right now, for what the app records by itself (signals).

A context variable, not a global: the web's threads, the central worker's threads and async
code each see their own. The middleware sets it to the request; code outside a request (the
CLI, a schedule) sets an Actor with ``acting_as``; otherwise it is the server itself.
"""

import contextlib
from contextvars import ContextVar

from cmdb.access.actor import Actor, actor_of

#: The request being served, or an Actor set by acting_as(); None: the server itself.
_current: ContextVar = ContextVar("cmdb_audit_actor", default=None)


def current_actor() -> Actor:
    """The Actor of the request being served (read now: DRF authenticates a token inside the
    view, after the middleware ran), of the acting_as() block, or the server."""
    current = _current.get()
    if current is None:
        return Actor.system()
    return current if isinstance(current, Actor) else actor_of(current)


@contextlib.contextmanager
def acting_as(actor_or_request):
    """Within the block, what the app records by itself is done by this Actor (or request)."""
    token = _current.set(actor_or_request)
    try:
        yield
    finally:
        _current.reset(token)
