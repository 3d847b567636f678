"""Choice sets for assets and changes."""

from django.db import models


class AssetKindChoices(models.TextChoices):
    SYSTEM = "system", "system"
    CPU = "cpu", "CPU"
    MEMORY = "memory", "memory"
    DIMM = "dimm", "DIMM"
    DISK = "disk", "disk"
    MOUNT = "mount", "mount"
    NIC = "nic", "NIC"
    HARDWARE = "hardware", "hardware"


class ChangeActionChoices(models.TextChoices):
    DISCOVERED = "discovered", "discovered"
    ADDED = "added", "added"
    REMOVED = "removed", "removed"
    CHANGED = "changed", "changed"
