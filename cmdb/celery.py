"""The server's Celery app: dispatches to host queues; the central worker runs cmdb tasks."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")

app = Celery("cmdb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The central worker also watches agents' heartbeats and ends overdue host tasks.
app.steps["worker"].add("cmdb.jobs.monitor:MonitorStep")
