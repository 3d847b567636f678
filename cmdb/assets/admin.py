"""Admin for assets and changes: read-only, collection owns them; only those of the hosts the
user may view."""

from django.contrib import admin

from cmdb.access.admin import ViewableMixin
from cmdb.assets.models import Asset, Change, FactReport, HostFacts
from cmdb.jobs.admin import ReadOnlyMixin


@admin.register(Asset)
class AssetAdmin(ViewableMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("host", "kind", "key", "updated", "first_seen")
    list_filter = ("kind", "updated")
    search_fields = ("host__ip", "host__hostname", "key", "data")
    list_select_related = ("host",)


@admin.register(Change)
class ChangeAdmin(ViewableMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("time", "host", "action", "kind", "key", "field", "old", "new", "job")
    list_filter = ("action", "kind", "time")
    search_fields = ("host__ip", "host__hostname", "key", "field")
    date_hierarchy = "time"
    list_select_related = ("host",)


@admin.register(FactReport)
class FactReportAdmin(ViewableMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("host", "received_at", "collected_at", "size_bytes", "job")
    list_filter = ("received_at",)
    search_fields = ("host__ip", "host__hostname")
    list_select_related = ("host",)


@admin.register(HostFacts)
class HostFactsAdmin(ViewableMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("host", "os", "os_version", "kernel", "cpu_model", "memory_bytes",
                    "disk_free_pct", "collected_at")  # fmt: skip
    list_filter = ("os", "arch")
    search_fields = ("host__ip", "host__hostname", "os", "cpu_model", "serial")
    list_select_related = ("host",)


class AssetInline(ViewableMixin, ReadOnlyMixin, admin.TabularInline):
    model = Asset
    extra = 0
    fields = ("kind", "key", "data", "metrics", "updated")
    readonly_fields = fields
    can_delete = False


class ChangeInline(ViewableMixin, ReadOnlyMixin, admin.TabularInline):
    model = Change
    extra = 0
    fields = ("time", "action", "kind", "key", "field", "old", "new")
    readonly_fields = fields
    can_delete = False
    ordering = ("-time",)
