"""The project's two exception families.

Why an action was not done, raised by the service layer (cmdb.jobs.services) and mapped once
by each front-end (CLI exit codes, API status codes, admin messages)::

    ServiceError
     ├── Refused          the request is wrong; nothing was recorded (``by_field``)
     │    ├── TooLarge    an upload over CMDB_MAX_UPLOAD_BYTES
     │    ├── NotPermitted  a target outside the requester's grants (cmdb.access)
     │    └── NeedsConfirmation  more hosts than the requester may reach unconfirmed
     ├── NotFound         no job or host task has that id
     └── Unavailable      the server cannot act now; ``job`` when one was recorded
          ├── CannotSign  this server has no signing key it can use
          └── BrokerDown  the broker is unreachable

Why a host task failed without a result of its own; stored as Celery FAILURE results::

    HostTaskFailure
     ├── HostTaskTimeout      the command ran past its timeout and was killed
     ├── HostTaskError        the agent could not run it (spawn failure, output limit, refusal)
     ├── HostUnreachable      no agent picked it up before the job's reach deadline
     └── HostTaskLost         the agent died or restarted while it ran, or it never reported
"""


class ServiceError(Exception):
    """An action was not (fully) done; the message says why, for an operator."""


class Refused(ServiceError, ValueError):
    """The request is invalid; nothing was recorded.

    ``problems`` lists every reason in order; ``by_field`` groups them by the request field
    they are about (command, timeout, reach_timeout, targets, groups, where, ...), for the API.
    """

    def __init__(self, by_field: dict[str, list[str]]):
        self.by_field = {name: list(messages) for name, messages in by_field.items()}
        self.problems = [message for messages in self.by_field.values() for message in messages]
        super().__init__("; ".join(self.problems))


class TooLarge(Refused):
    """An upload larger than the server takes."""


class NotPermitted(Refused):
    """Some targets are outside what the requester's grants allow; nothing was recorded."""


class NeedsConfirmation(Refused):
    """The request would reach more hosts than its requester may without confirming; nothing
    was recorded. ``count`` hosts, ``ceiling`` the most without confirming; the reason is the
    field "confirm", so that a front-end can ask for it (the admin's confirmation step)."""

    def __init__(self, message: str, count: int, ceiling: int):
        self.count, self.ceiling = count, ceiling
        super().__init__({"confirm": [message]})


class NotFound(ServiceError, LookupError):
    """No job or host task has the id given."""


class Unavailable(ServiceError):
    """The server cannot act now; ``job`` is the job recorded with the reason, if any."""

    def __init__(self, message: str, job=None):
        self.job = job
        super().__init__(message)


class CannotSign(Unavailable):
    """The server cannot sign what agents would run (no key, an unreadable one)."""


class BrokerDown(Unavailable):
    """The broker could not be reached; a job recorded says how far it got."""


class HostTaskFailure(Exception):
    """Base class: a host task that ended without success."""


class HostTaskTimeout(HostTaskFailure):
    pass


class HostTaskError(HostTaskFailure):
    pass


class HostUnreachable(HostTaskFailure):
    pass


class HostTaskLost(HostTaskFailure):
    pass
