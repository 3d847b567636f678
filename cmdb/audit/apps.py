"""App config."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "cmdb.audit"
    label = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Here, not at the top: models can be imported only once every app is loaded.
        from cmdb.audit import signals

        signals.connect()
