"""Attacks by a client with broker access on real agents: re-pointing an agent with remote control
so that a message signed for one host runs on another, and stopping agents. Each must be
refused and change nothing."""

import json
import socket
import uuid

import pytest
from django.conf import settings

from cmdb.celery import app
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.cli import wait_state
from tests.support.factories import make_host, signed_headers
from tests.support.fleet import AGENT_IPS, dropped_counts, ping_nodes, wait_dropped, wait_for
from wire import names
from wire.messages import CommandSpec

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

A, B = AGENT_IPS
SCRATCH = "127.0.1.250"  # a queue nobody consumes: where the attacker builds its message


@pytest.fixture
def hosts(fleet):
    return [make_host(ip) for ip in AGENT_IPS]


def signed_for_a(tmp_path, queue: str) -> tuple[HostTask, object]:
    """A genuine message for host A (a captured one, say), published to ``queue``."""
    marker = tmp_path / f"ran-{uuid.uuid4().hex[:6]}"
    job = Job.objects.create(command=f"touch {marker}", timeout=10, reach_timeout=30)
    task = HostTask.objects.create(job=job, host=make_host(A), ip=A, task_id=str(uuid.uuid4()))
    spec = CommandSpec(job=str(job.pk), host=A, command=job.command, timeout=10).to_wire()
    app.send_task(names.RUN_COMMAND, args=[spec], queue=queue, task_id=task.task_id,
                  headers=signed_headers(names.RUN_COMMAND, A, task.task_id, spec),
                  link=app.signature(names.STORE_RESULT,
                                     queue=settings.CMDB["RESULTS_QUEUE"]))  # fmt: skip
    return task, marker


def test_remote_control_cannot_make_an_agent_consume_another_hosts_queue(hosts):
    replies = app.control.add_consumer(A, destination=[f"agent@{B}"], reply=True, timeout=2)

    assert replies and all("error" in r[f"agent@{B}"] for r in replies), replies
    queues = app.control.inspect(destination=[f"agent@{B}"], timeout=2).active_queues() or {}
    # Nor does it tell anyone what it consumes (or runs, with its arguments).
    assert all("error" in reply for reply in queues.values()), queues


def test_a_message_signed_for_one_host_does_not_run_on_another_that_receives_it(hosts, tmp_path):
    """The attack: a message for A, with A in its routing key, pushed into B's queue (as
    add_consumer once made B take A's queue). B checks the host against its own identity."""
    task, marker = signed_for_a(tmp_path, SCRATCH)
    before = dropped_counts()
    with redis_client(app) as client:
        raw = json.loads(wait_for(lambda: client.rpop(SCRATCH), 10, "the crafted message"))
        raw["properties"]["delivery_info"]["routing_key"] = A
        client.lpush(B, json.dumps(raw))

    # B refuses it, and says so unsigned (the message was not the server's for B): which ends
    # nothing (only A's accepted key speaks for A).
    wait_dropped("report: unsigned", before)
    task.refresh_from_db()
    assert task.state == State.PENDING and not marker.exists()


def test_remote_control_cannot_stop_an_agent(hosts, tmp_path):
    app.control.cancel_consumer(B, destination=[f"agent@{B}"], reply=True, timeout=2)
    app.control.shutdown(destination=[f"agent@{B}"])
    app.control.pool_shrink(2, destination=[f"agent@{B}"])

    # Still there, still consuming its own queue: a genuine message for B runs.
    assert wait_for(lambda: ping_nodes(app, [f"agent@{B}"]), 10, "agent B to answer")
    job = Job.objects.create(command="true", timeout=10, reach_timeout=30)
    task = HostTask.objects.create(job=job, host=hosts[1], ip=B, task_id=str(uuid.uuid4()))
    spec = CommandSpec(job=str(job.pk), host=B, command="true", timeout=10).to_wire()
    app.send_task(names.RUN_COMMAND, args=[spec], queue=B, task_id=task.task_id,
                  headers=signed_headers(names.RUN_COMMAND, B, task.task_id, spec),
                  link=app.signature(names.STORE_RESULT,
                                     queue=settings.CMDB["RESULTS_QUEUE"]))  # fmt: skip
    assert wait_state(task.task_id, {State.OK, State.ERROR}).state == State.OK


def test_remote_control_cannot_stop_the_central_worker(hosts):
    central = f"central@{socket.gethostname()}"
    replies = app.control.broadcast("shutdown", destination=[central], reply=True, timeout=2)

    assert replies and "error" in replies[0][central], replies
    assert wait_for(lambda: ping_nodes(app, [central]), 10, "the central worker to answer")
