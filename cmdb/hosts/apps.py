"""App config."""

from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "cmdb.hosts"
    label = "hosts"
    verbose_name = "Hosts"
    default_auto_field = "django.db.models.BigAutoField"
