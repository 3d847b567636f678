"""FactReport, Asset, HostFacts and Change models."""

from django.db import models
from django.utils import timezone

from cmdb.assets.choices import AssetKindChoices, ChangeActionChoices


class FactReport(models.Model):
    """A collection as the agent sent it: kept for the record, the rows below are built from it."""

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="fact_reports")
    job = models.ForeignKey("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True)
    collected_at = models.DateTimeField("collected", help_text="The host's clock.")
    received_at = models.DateTimeField("received", default=timezone.now, db_index=True)
    report = models.JSONField("report")
    size_bytes = models.PositiveIntegerField("size", help_text="Bytes of the report as JSON.")
    errors = models.JSONField("plugin errors", default=dict, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "fact report"

    def __str__(self):
        return f"facts of host {self.host_id} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class Asset(models.Model):
    """One normalised fact of a host (a disk, a NIC, its CPU ...), by a key that stays stable."""

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="assets")
    kind = models.CharField("kind", max_length=16, choices=AssetKindChoices.choices)
    key = models.CharField(
        "key", max_length=255, help_text="Disk serial or name, NIC MAC, mount point, DIMM slot."
    )
    data = models.JSONField("facts", help_text="Compared between collections: changes are history.")
    metrics = models.JSONField(
        "metrics", default=dict, blank=True,
        help_text="Current values that move all the time (free space): kept, not compared.",
    )  # fmt: skip
    first_seen = models.DateTimeField("first seen", default=timezone.now)
    updated = models.DateTimeField("updated", default=timezone.now)

    class Meta:
        ordering = ["host", "kind", "key"]
        verbose_name = "asset"
        constraints = [
            models.UniqueConstraint(fields=["host", "kind", "key"], name="asset_unique_key")
        ]

    def __str__(self):
        return f"{self.kind} {self.key}"


class HostFacts(models.Model):
    """The flat facts --where and the API filter on, one row per host, from its last collection."""

    host = models.OneToOneField("hosts.Host", on_delete=models.CASCADE, related_name="facts")
    collected_at = models.DateTimeField("collected")
    os = models.CharField("OS id", max_length=64, blank=True, db_index=True)
    os_version = models.CharField("OS version", max_length=64, blank=True)
    kernel = models.CharField("kernel", max_length=128, blank=True)
    arch = models.CharField("architecture", max_length=32, blank=True)
    fqdn = models.CharField("FQDN", max_length=255, blank=True)
    cpu_model = models.CharField("CPU model", max_length=255, blank=True)
    cpu_threads = models.PositiveIntegerField("CPU threads", null=True, blank=True)
    memory_bytes = models.BigIntegerField("memory", null=True, blank=True)
    vendor = models.CharField("vendor", max_length=255, blank=True)
    product = models.CharField("product", max_length=255, blank=True)
    serial = models.CharField("serial", max_length=255, blank=True)
    disk_free_pct = models.FloatField(
        "disk free %", null=True, blank=True, help_text="Free space on the fullest filesystem."
    )

    class Meta:
        verbose_name = "host facts"
        verbose_name_plural = "host facts"

    def __str__(self):
        return f"facts of host {self.host_id}"


class Change(models.Model):
    """One entry of a host's history: what a collection found added, removed or changed."""

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="changes")
    job = models.ForeignKey("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True)
    time = models.DateTimeField("time", default=timezone.now, db_index=True)
    action = models.CharField("action", max_length=16, choices=ChangeActionChoices.choices)
    kind = models.CharField("kind", max_length=16, blank=True)
    key = models.CharField("key", max_length=255, blank=True)
    field = models.CharField("field", max_length=64, blank=True)
    old = models.JSONField("old value", null=True, blank=True)
    new = models.JSONField("new value", null=True, blank=True)

    class Meta:
        ordering = ["-time", "kind", "key", "field"]
        verbose_name = "change"

    def __str__(self):
        target = f"{self.kind} {self.key}".strip()
        if self.action == ChangeActionChoices.CHANGED:
            return f"{target}: {self.field} {self.old!r} -> {self.new!r}"
        return f"{self.action} {target}".strip()
