"""Choice sets for hosts."""

from django.db import models


class AgentStatusChoices(models.TextChoices):
    UNKNOWN = "unknown", "unknown"
    ONLINE = "online", "online"
    OFFLINE = "offline", "offline"
