"""The agent: a Celery worker on every managed host, consuming the queue named after its IP.

Importing this package creates nothing: the agent's Celery app is ``workers.celery.app``
(``celery -A workers worker`` finds it there), so the server can import the wire contract and
never make the agent's app current.
"""
