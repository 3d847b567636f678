"""The SSH gateway: a Celery worker that serves the queues of ssh-mode hosts, as their agents
would, and runs what the server signed over SSH (asyncssh), one process for hundreds of hosts."""
