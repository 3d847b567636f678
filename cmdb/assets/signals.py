"""Signal handlers, connected from AppConfig.ready()."""

from django.conf import settings
from django.db.models.signals import post_migrate
from django_celery_beat.models import IntervalSchedule, PeriodicTask


def ensure_collection_schedule(sender, **kwargs):
    """Create the periodic "collect facts" task once, from settings; then the admin owns it."""
    if sender.label != "assets":
        return
    every = settings.CMDB["COLLECT_INTERVAL"]
    schedule, _ = IntervalSchedule.objects.get_or_create(
        every=every, period=IntervalSchedule.SECONDS
    )
    PeriodicTask.objects.get_or_create(
        name="collect facts from every host",
        defaults={"task": "cmdb.assets.collect_all", "interval": schedule, "queue": None},
    )


def connect():
    post_migrate.connect(ensure_collection_schedule, dispatch_uid="cmdb.assets.schedule")
