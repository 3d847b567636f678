"""Why a host task failed without a result of its own; stored as Celery FAILURE results.

HostTaskFailure
 ├── HostTaskTimeout      the command ran past its timeout and was killed
 ├── HostTaskError        the agent could not run it (spawn failure, output limit, refusal)
 ├── HostUnreachable      no agent picked it up before the job's reach deadline
 └── HostTaskLost         the agent died or restarted while it ran, or it never reported
"""


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
