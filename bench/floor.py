"""The floor: raw Celery with a Redis result backend, a trivial task, no Django, no database.

    celery -A bench.floor worker -Q 127.3.0.1,127.3.0.2,...

The bench publishes this task to N host queues and waits for all N results: no path that
stores results in a database can be faster than this one on the same broker.
"""

import os
import socket

from celery import Celery

app = Celery("bench_floor", fixups=[])
app.conf.update(
    broker_url=os.environ["FLOOR_BROKER_URL"],
    result_backend=os.environ["FLOOR_BROKER_URL"],
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.floor.hostname")
def hostname() -> str:
    return socket.gethostname()
