"""The agent: a Celery worker on every managed host, consuming the queue named after its IP."""

from workers.celery import app

__all__ = ["app"]
