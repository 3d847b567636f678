"""The server's Celery app: dispatches to host queues; the central worker runs cmdb tasks."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")

app = Celery("cmdb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The central worker also takes agents' results in batches, watches their heartbeats and ends
# overdue host tasks.
app.steps["consumer"].add("cmdb.jobs.intake:ResultIntake")
app.steps["worker"].add("cmdb.jobs.monitor:MonitorStep")
