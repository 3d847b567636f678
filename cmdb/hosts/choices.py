"""Choice sets for hosts."""

from django.db import models


class KeyStateChoices(models.TextChoices):
    """An agent's key, as salt-key keeps them: only an accepted host receives anything."""

    NONE = "none", "no key"
    PENDING = "pending", "pending"
    ACCEPTED = "accepted", "accepted"
    REJECTED = "rejected", "rejected"


class AgentStatusChoices(models.TextChoices):
    UNKNOWN = "unknown", "unknown"
    ONLINE = "online", "online"
    OFFLINE = "offline", "offline"


class ModeChoices(models.TextChoices):
    """How the server reaches a host: its own agent, or the SSH gateway (gateway/)."""

    AGENT = "agent", "agent"
    SSH = "ssh", "ssh"
    SALT = "salt", "salt"
