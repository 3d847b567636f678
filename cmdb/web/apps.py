"""App config."""

from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "cmdb.web"
    label = "web"
    verbose_name = "Web"
