"""The server's fence at a reach deadline (cmdb.jobs.broker.fence, unqueue; cmdb.jobs.sweeps):
taken once, held on every later try; nothing a host's agent writes under its own keys trips
it for the other hosts."""

import json
import uuid

import pytest

from cmdb.celery import app
from cmdb.jobs import broker, sweeps
from wire import names

HOST = "127.0.1.97"


@pytest.fixture
def client(redis_url):
    with app.connection_for_write() as conn:
        yield conn.default_channel.client


def test_the_fence_once_taken_is_held_on_the_next_try(client):
    """A sweep that took the claim and then failed to write its verdict: the next one must
    see the claim as the server's, not as an agent's (or the task would end lost)."""
    task_id = str(uuid.uuid4())
    assert broker.fence(app, [(task_id, HOST)]) == {task_id: None}
    assert broker.fence(app, [(task_id, HOST)]) == {task_id: None}


def test_a_claim_an_agent_took_first_is_its(client):
    task_id = str(uuid.uuid4())
    client.set(names.CLAIMED_KEY.format(host=HOST, task_id=task_id), "4242")
    assert broker.fence(app, [(task_id, HOST)]) == {task_id: "4242"}


@pytest.mark.parametrize("holder", ["²", "9" * 5000, "", "-1", "pid"])
def test_a_claim_value_no_agent_writes_is_no_pid(holder):
    assert sweeps._pid(holder) is None


def test_what_a_host_pushes_onto_its_own_queue_does_not_stop_the_unqueue(client):
    queue = f"127.0.1.{uuid.uuid4().int % 50 + 200}"
    wanted = str(uuid.uuid4())
    ours = json.dumps({"headers": {"id": wanted}, "body": ""})
    for junk in ('{"headers": {"id": {}}}', "not json", '{"headers": []}', "x" * (300 << 10)):
        client.lpush(queue, junk)
    client.lpush(queue, ours)
    try:
        assert broker.unqueue(client, queue, {wanted, "another"}) == {wanted}
        assert client.llen(queue) == 4
    finally:
        client.delete(queue)


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_a_message_the_broker_lost_while_the_agent_was_up_is_sent_once_more(fleet, client):
    """Neither queued, nor held by the agent, nor claimed, at its deadline, with its agent
    alive: lost by the broker after it handed it over (kombu pops before it records). The
    server sends it once more, with a new deadline, and it runs."""
    from datetime import timedelta

    from django.utils import timezone

    from cmdb.hosts.models import Host
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.models import HostTask, Job
    from tests.support.cli import wait_state
    from tests.support.factories import make_host
    from tests.support.fleet import AGENT_IPS, wait_for

    ip = AGENT_IPS[0]
    host = make_host(ip)
    # Its heartbeats believed again (the inventory was emptied before this test): the monitor
    # marks it online once it hears one.
    Host.objects.filter(pk=host.pk).update(agent_status="offline")
    wait_for(lambda: Host.objects.get(pk=host.pk).agent_status == "online", 60, "online")
    job = Job.objects.create(command="echo sent-again", timeout=30, reach_timeout=20)
    task = HostTask.objects.create(
        job=job,
        host=host,
        ip=ip,
        task_id=str(uuid.uuid4()),
        reach_deadline=timezone.now() - timedelta(seconds=1),
    )

    task = wait_state(task.task_id, {State.OK, State.UNREACHABLE}, timeout=60)

    assert task.state == State.OK and task.stdout_head == "sent-again\n"
    assert client.exists(broker.RESENT_KEY.format(task_id=task.task_id))
