"""The agent's Celery app: no Django, no database, only the broker."""

from celery import Celery

from workers.config import celery_config

# fixups=[]: Celery would set Django up whenever DJANGO_SETTINGS_MODULE is in the environment.
app = Celery("workers", include=["workers.tasks"], fixups=[])
app.config_from_object(celery_config())
app.conf.update(
    # Agents send results through link callbacks to the central worker, never to a backend.
    result_backend=None,
    task_ignore_result=True,
    worker_send_task_events=False,
    worker_disable_rate_limits=True,
)
