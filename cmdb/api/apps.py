"""App config."""

from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "cmdb.api"
    label = "api"
    verbose_name = "API"
