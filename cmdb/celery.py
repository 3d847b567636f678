"""The server's Celery app: dispatches to host queues; the central worker runs cmdb tasks."""

import logging
import os

from celery import Celery
from celery.signals import worker_init
from celery.worker import control as panel

from wire import control

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")

app = Celery("cmdb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The central worker also takes agents' results in batches, watches their heartbeats and ends
# overdue host tasks.
app.steps["worker"].add("cmdb.jobs.intake:IntakeStep")
app.steps["worker"].add("cmdb.jobs.monitor:MonitorStep")


@worker_init.connect
def _obey_only_harmless_control(sender=None, **_):
    # The central worker, like every agent: anyone on the broker could otherwise shut it down.
    control.obey_only_harmless(panel.Panel.data, logging.getLogger("cmdb.celery"))
