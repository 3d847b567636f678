"""App config."""

from django.apps import AppConfig


class AssetsConfig(AppConfig):
    name = "cmdb.assets"
    label = "assets"
    verbose_name = "Assets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from cmdb.assets import signals

        signals.connect()
