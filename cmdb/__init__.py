"""The CMDB server: inventory, jobs, admin and commands; the only part that touches the database."""

# Loaded with Django so that shared_task and the dispatcher use the server's app.
from cmdb.celery import app as celery_app

__all__ = ["celery_app"]
