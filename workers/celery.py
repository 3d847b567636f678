"""The agent's Celery app and the state of this agent process: no Django, no database."""

from celery import Celery
from celery.signals import worker_init

from wire import transport
from workers.agent import Agent
from workers.alive import heartbeat_step
from workers.config import AgentSettings
from workers.connections import share_connections
from workers.redeliver import redeliver_step

_settings = AgentSettings.from_environ()

# fixups=[]: Celery would set Django up whenever DJANGO_SETTINGS_MODULE is in the environment.
app = Celery("workers", include=["workers.tasks"], fixups=[])
app.config_from_object(_settings.celery_config())
app.conf.update(
    # Agents send results through link callbacks to the central worker, never to a backend.
    result_backend=None,
    task_ignore_result=True,
    worker_send_task_events=False,
    worker_disable_rate_limits=True,
    # A result that cannot be published is lost (no backend, no errback): ride out a broker
    # failover of a couple of minutes instead of Celery's default of about two seconds.
    task_publish_retry_policy={
        "max_retries": 40,
        "interval_start": 0,
        "interval_step": 1,
        "interval_max": 5,
    },
)

#: What this agent process holds (its key, its claims, its broker client); the tasks are given it.
agent = Agent(app, _settings)
app.steps["consumer"].add(heartbeat_step(agent))
app.steps["consumer"].add(redeliver_step(agent))


@worker_init.connect
def _own_broker_keys(sender=None, **_):
    """Before the worker connects: kombu's unacknowledged messages under this agent's own keys,
    and its own queue not declared either (nobody reads its binding table): a host's broker
    user may write neither the shared keys nor any binding (deploy/BROKER.md)."""
    if getattr(getattr(sender, "app", app), "main", app.main) != app.main:
        return
    # And every command on one connection per process (workers.connections), so that a
    # host's agent holds two at most: that, and the consumer's BRPOP.
    share_connections()
    queues = sender.app.amqp.queues.consume_from or {}
    for queue in queues.values():
        queue.no_declare = True
    options = transport.agent_transport_options(queues)
    sender.app.conf.broker_transport_options = {**sender.app.conf.broker_transport_options,
                                                **options}  # fmt: skip
