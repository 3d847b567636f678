"""App config."""

from django.apps import AppConfig


class AssetsConfig(AppConfig):
    name = "cmdb.assets"
    label = "assets"
    verbose_name = "Assets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Here, not at the top: models can be imported only once every app is loaded.
        from cmdb.assets import signals

        signals.connect()
