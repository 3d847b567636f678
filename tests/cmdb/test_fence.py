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
