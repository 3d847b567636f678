"""Agents run only what the server signed: forged, altered, re-routed and stale messages are
refused before anything runs, by real agents on a real broker."""

import re
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.factories import make_host, signed_headers
from tests.support.fleet import AGENT_IPS, dropped_counts, wait_dropped, wait_for
from wire.messages import VERSION, CommandSpec

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

UNSIGNED = "signature missing: message not signed by the server; refused"
FORGED = "signature invalid: message not signed by the server; refused"


@pytest.fixture
def hosts(fleet):
    return [make_host(ip) for ip in AGENT_IPS]


def host_task(host, command: str) -> HostTask:
    job = Job.objects.create(command=command, timeout=10, reach_timeout=30)
    return HostTask.objects.create(job=job, host=host, ip=host.ip, task_id=str(uuid.uuid4()))


def spec_of(task: HostTask) -> dict:
    return CommandSpec(job=str(task.job_id), host=task.ip, command=task.job.command,
                       timeout=10).to_wire()  # fmt: skip


def publish(task: HostTask, spec: dict, headers: dict | None, queue: str | None = None) -> dict:
    """What a client with broker access can do: put any message on any host's queue. Returns
    the server's counts of dropped messages from before."""
    from cmdb.celery import app
    from wire import names

    before = dropped_counts()
    app.send_task(
        names.RUN_COMMAND,
        args=[spec],
        queue=queue or task.ip,
        task_id=task.task_id,
        headers=headers,
        link=app.signature(names.STORE_RESULT, queue=settings.CMDB["RESULTS_QUEUE"]),
    )
    return before


def claimed(task_id: str) -> bool:
    from cmdb.celery import app
    from wire import names

    # By any host's agent: a re-targeted message would be claimed by the one that received it.
    pattern = names.CLAIMED_KEY.format(host="*", task_id=task_id)
    with app.connection_for_write() as conn:
        return bool(conn.default_channel.client.keys(pattern))


def refusal_logged(fleet, task: HostTask, ip: str) -> str:
    """The reason the agent on ``ip`` logged for refusing ``task``'s message."""
    log = fleet.logs / f"agent-{ip}.log"

    def found():
        for line in log.read_text().splitlines():
            if task.task_id in line and (why := re.search(r"refused \S+ \S+ on \S+: (.*)$", line)):
                return why.group(1)
        return None

    return wait_for(found, 20, f"the agent of {ip} to refuse {task.task_id}")


def assert_refused(fleet, task: HostTask, error: str, marker, before, ip: str = "") -> None:
    """Refused by the agent, which logs why; its report of that is not signed (the message was
    not the server's), so the server drops it and the task stays as it was."""
    assert refusal_logged(fleet, task, ip or task.ip).endswith(error)
    wait_dropped("report: unsigned", before)
    task.refresh_from_db()
    assert task.state == State.PENDING
    # Refused before the run-once claim: a forged copy cannot burn a genuine message's task id.
    assert not claimed(task.task_id)
    assert not marker.exists()


def test_an_unsigned_message_runs_nothing_and_leaves_the_task_id_to_the_server(
    fleet, hosts, tmp_path
):
    marker = tmp_path / "ran"
    task = host_task(hosts[0], f"touch {marker}")

    before = publish(task, spec_of(task), headers=None)

    assert_refused(fleet, task, UNSIGNED, marker, before)
    # The server's own message with that id still runs.
    from wire import names

    publish(task, spec_of(task), signed_headers(names.RUN_COMMAND, task.ip, task.task_id,
                                                spec_of(task)))  # fmt: skip
    wait_for(marker.exists, 20, "the signed message to run")


def test_a_message_signed_with_another_key_runs_nothing(fleet, hosts, tmp_path):
    from wire import names

    marker = tmp_path / "ran"
    task = host_task(hosts[1], f"touch {marker}")
    spec = spec_of(task)
    headers = signed_headers(names.RUN_COMMAND, task.ip, task.task_id, spec,
                             key=Ed25519PrivateKey.generate())  # fmt: skip

    before = publish(task, spec, headers)

    assert_refused(fleet, task, FORGED, marker, before)


def test_a_signed_message_whose_command_was_changed_runs_nothing(fleet, hosts, tmp_path):
    from wire import names

    marker = tmp_path / "ran"
    task = host_task(hosts[0], "true")
    spec = spec_of(task)
    headers = signed_headers(names.RUN_COMMAND, task.ip, task.task_id, spec)

    before = publish(task, {**spec, "command": f"touch {marker}"}, headers)

    assert_refused(fleet, task, FORGED, marker, before)


def test_a_signed_message_past_its_deadline_runs_nothing(fleet, hosts, tmp_path):
    from wire import names, signing

    marker = tmp_path / "ran"
    task = host_task(hosts[1], f"touch {marker}")
    spec = spec_of(task)
    headers = signed_headers(names.RUN_COMMAND, task.ip, task.task_id, spec,
                             ttl=-signing.DEADLINE_SLACK - 10)  # fmt: skip

    before = publish(task, spec, headers)

    assert "signature expired" in refusal_logged(fleet, task, task.ip)
    assert_refused(fleet, task, "refused", marker, before)


def test_a_message_moved_to_another_hosts_queue_inside_redis_runs_nothing(fleet, hosts, tmp_path):
    """Kombu's Redis transport trusts the routing key written inside the message: a message
    signed for queue X, moved by hand onto this agent's list, must not pass for X's."""
    from cmdb.celery import app
    from wire import names

    marker = tmp_path / "ran"
    elsewhere = "127.0.1.240"  # nobody consumes it
    job = Job.objects.create(command=f"touch {marker}", timeout=10, reach_timeout=30)
    task = HostTask.objects.create(job=job, ip=elsewhere, task_id=str(uuid.uuid4()))
    spec = spec_of(task)
    publish(task, spec, signed_headers(names.RUN_COMMAND, elsewhere, task.task_id, spec))
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        wait_for(lambda: client.llen(elsewhere), 10, "the message to be queued")
        client.rpoplpush(elsewhere, AGENT_IPS[0])

    error = f"message for queue '{elsewhere}' reached the agent of {AGENT_IPS[0]}; refused"
    assert refusal_logged(fleet, task, AGENT_IPS[0]) == error
    time.sleep(0.5)
    assert not marker.exists()


def test_a_server_without_its_configured_key_dispatches_nothing(manage, hosts, tmp_path):
    out = manage("run", "true", "--hosts", AGENT_IPS[0],
                 env={"CMDB_SIGNING_KEY": str(tmp_path / "missing")})  # fmt: skip

    assert out.returncode == 2
    assert "nothing dispatched: the signing key CMDB_SIGNING_KEY=" in out.stderr
    assert "does not exist" in out.stderr
    assert not Job.objects.exists()
    # A push checks before it uploads: nothing reaches the broker either.
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"never uploaded" * 1000)
    out = manage("push", str(payload), "/tmp/x.bin", "--hosts", AGENT_IPS[0],
                 env={"CMDB_SIGNING_KEY": str(tmp_path / "missing")})  # fmt: skip
    assert out.returncode == 2 and "does not exist" in out.stderr
    from cmdb.celery import app
    from cmdb.jobs.broker import redis_client
    from workers.placing import sha256_file

    with redis_client(app) as client:
        assert not client.exists(f"cmdb:blob:{sha256_file(payload)}:meta")
    assert not Job.objects.exists()


def test_signing_key_prints_the_public_key_agents_are_given(manage, fleet, signing_key):
    from wire import signing

    out = manage("signing_key", "--public")

    assert out.returncode == 0, out.stderr
    assert out.stdout == signing.public_path(signing_key).read_text()
    assert out.stdout.startswith("-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize(
    ("task_name", "spec"),
    [
        ("workers.collect_facts", {"plugins": {"system": "collectors.system"}}),
        ("workers.push_files", {"manifest": {}, "dest": "/tmp/cmdb-signing-test"}),
        ("workers.fetch_file", {"path": "/etc/hostname"}),
    ],
    ids=["collect", "push", "fetch"],
)
def test_every_task_that_acts_on_a_host_checks_the_signature(fleet, hosts, task_name, spec,
                                                             tmp_path):  # fmt: skip
    from cmdb.celery import app
    from wire import names

    job = Job.objects.create(command=task_name, timeout=10, reach_timeout=30)
    task = HostTask.objects.create(job=job, host=hosts[0], ip=AGENT_IPS[0],
                                   task_id=str(uuid.uuid4()))  # fmt: skip
    spec = {"v": VERSION, "job": str(job.id), "host": AGENT_IPS[0], "timeout": 10, **spec}
    # Signed, but for another task: the agent checks against its own task's name.
    headers = signed_headers(names.RUN_COMMAND, AGENT_IPS[0], task.task_id, spec)

    store = app.signature(names.STORE_RESULT, queue=settings.CMDB["RESULTS_QUEUE"])
    before = dropped_counts()
    app.send_task(task_name, args=[spec], queue=AGENT_IPS[0], task_id=task.task_id,
                  headers=headers, link=store)  # fmt: skip

    assert_refused(fleet, task, FORGED, tmp_path / "never", before)
