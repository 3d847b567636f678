"""Agents' keys, accepted like salt-key's: a host whose key is not accepted receives nothing; a
registration proves it holds its key; a changed key makes the host pending again, loudly; a
flood of forged registrations is capped."""

import ipaddress
import logging
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command

from cmdb.hosts import keys
from cmdb.hosts.choices import KeyStateChoices as Key
from cmdb.hosts.models import Host
from cmdb.jobs import results, services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.exceptions import Refused
from cmdb.jobs.models import Job
from tests.support.api import make_user, token_client
from tests.support.cli import wait_state
from tests.support.factories import from_host, signed_registration
from tests.support.fleet import wait_for
from wire import signing
from wire.messages import Report

IP = "127.0.1.200"  # beyond the suite's auto-accepted agents
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cli_user")]


@pytest.fixture(autouse=True)
def operators_decide(settings):
    settings.CMDB = {**settings.CMDB, "AUTO_ACCEPT": [], "COLLECT_ON_START": False}


def refused_run(ip: str) -> list[str]:
    with pytest.raises(Refused) as refused:
        services.run("id", services.Targets(hosts=[ip]), "t")
    return refused.value.problems


def test_a_new_agent_is_pending_and_receives_nothing_until_accepted():
    key = Ed25519PrivateKey.generate()
    host, outcome = keys.register(signed_registration(IP, key))

    assert (outcome, host.key_state) == ("new key", Key.PENDING)
    assert host.agent_name == "" and host.key_fingerprint.startswith("SHA256:")
    assert refused_run(IP) == [
        f"host {IP}'s agent key is pending: `manage.py keys accept {IP}` first"
    ]
    assert not Job.objects.exists()

    assert keys.accept([IP]) == [IP]
    host, outcome = keys.register(signed_registration(IP, key, agent_pid=99))
    assert (outcome, host.key_state, host.agent_pid) == ("restarted", Key.ACCEPTED, 99)


def test_another_key_makes_the_host_pending_again_loudly_and_changes_nothing_else(caplog):
    old = Ed25519PrivateKey.generate()
    keys.register(signed_registration(IP, old, agent_pid=1))
    keys.accept([IP])
    keys.register(signed_registration(IP, old, agent_pid=1))

    with caplog.at_level(logging.WARNING, logger="cmdb.hosts.keys"):
        host, outcome = keys.register(signed_registration(IP, agent_pid=666))

    assert (outcome, host.key_state) == ("changed key", Key.PENDING)
    assert host.key_changed_at is not None and host.agent_pid == 1  # no takeover of its pid
    assert "ANOTHER KEY" in caplog.text
    assert "pending" in refused_run(IP)[0]


def test_a_changed_key_waits_beside_the_accepted_one_until_an_operator_decides(capsys):
    """As salt-key keeps them: anyone on the broker can register another key for a host, so
    the accepted one stays on record (what the host ran under it still counts) until an
    operator compares fingerprints and accepts the new key, or rejects it."""
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys.register(signed_registration(IP, old, agent_pid=1))
    keys.accept([IP])
    job = Job.objects.create(command="apt-get upgrade", timeout=30, reach_timeout=30)
    task = job.host_tasks.create(host=Host.objects.get(ip=IP), ip=IP, task_id="t-" + "9" * 34,
                                 state=State.RUNNING)  # fmt: skip

    host, _ = keys.register(signed_registration(IP, new, agent_pid=666))
    accepted_fp = signing.key_fingerprint(old.public_key())
    assert (host.key_state, host.key_fingerprint) == (Key.PENDING, accepted_fp)
    assert host.candidate_fingerprint == signing.key_fingerprint(new.public_key())
    call_command("keys")
    listed = capsys.readouterr().out
    assert accepted_fp in listed and f"new: {host.candidate_fingerprint}" in listed

    # The real agent's report of what it ran still counts; the newcomer's does not.
    now = time.time()
    report = Report(task_id=task.task_id, outcome="ok", exit_code=0, started_at=now,
                    finished_at=now, duration=0.0)  # fmt: skip
    assert results.store_batch([], [from_host(task, report, key=new)]) == 0
    assert results.store_batch([], [from_host(task, report, key=old)]) == 1

    assert keys.reject([IP]) == [IP]  # the new key: the accepted one stays
    host.refresh_from_db()
    assert (host.key_state, host.key_fingerprint, host.candidate_key) == (
        Key.ACCEPTED,
        accepted_fp,
        "",
    )
    keys.register(signed_registration(IP, new, agent_pid=667))
    assert keys.accept([IP]) == [IP]  # now the new one, in the accepted one's place
    host.refresh_from_db()
    assert host.key_state == Key.ACCEPTED and host.agent_key == signing.public_pem(new).decode()
    assert host.candidate_key == "" and host.key_changed_at is None


@pytest.mark.parametrize("forge", ["unsigned", "other key", "not a key"])
def test_a_registration_that_proves_no_key_is_refused(forge):
    registration = signed_registration(IP)
    if forge == "unsigned":
        registration = registration.__class__(**{**registration.__dict__, "signature": ""})
    elif forge == "other key":
        other = signed_registration(IP)
        registration = registration.__class__(**{**registration.__dict__,
                                                 "signature": other.signature})  # fmt: skip
    else:
        registration = registration.__class__(**{**registration.__dict__, "pubkey": "x"})

    assert keys.register(registration) == (None, "refused")
    assert not Host.objects.filter(ip=IP).exists()


def test_a_rejected_host_stays_rejected_and_a_flood_of_new_ones_is_capped(settings):
    key = Ed25519PrivateKey.generate()
    keys.register(signed_registration(IP, key))
    assert keys.reject([IP]) == [IP]
    assert keys.register(signed_registration(IP, key))[0].key_state == Key.REJECTED
    assert "rejected" in refused_run(IP)[0]

    settings.CMDB = {**settings.CMDB, "MAX_PENDING": 3}
    outcomes = [keys.register(signed_registration(f"127.0.2.{n}"))[1] for n in range(1, 7)]
    assert outcomes == ["new key"] * 3 + ["too many pending"] * 3
    assert Host.objects.filter(key_state=Key.PENDING).count() == 3


def test_keys_command_and_api_list_accept_reject_and_delete(capsys):
    keys.register(signed_registration(IP))
    call_command("keys")
    assert f"pending:\n  {IP:<16} SHA256:" in capsys.readouterr().out

    host = Host.objects.get(ip=IP)
    nobody = token_client(make_user("hosts.view_host"))
    assert nobody.post(f"/api/hosts/{host.pk}/accept-key/").status_code == 403
    keeper = token_client(make_user("hosts.view_host", "hosts.manage_keys"))
    answer = keeper.post(f"/api/hosts/{host.pk}/accept-key/")
    assert (answer.status_code, answer.json()["key_state"]) == (200, Key.ACCEPTED)

    call_command("keys", "reject", IP)
    assert Host.objects.get(ip=IP).key_state == Key.REJECTED
    call_command("keys", "delete", IP)
    assert Host.objects.get(ip=IP).key_state == Key.NONE
    assert "no agent key yet" in refused_run(IP)[0]


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_a_real_agent_is_pending_until_accepted_then_runs(fleet, tmp_path):
    """End to end, with the central worker's own settings: IP is not auto-accepted there."""
    root = tmp_path / "root"
    root.mkdir()
    fleet.start_agent(IP, concurrency=1, extra_env={"CMDB_AGENT_ROOT": str(root)})
    try:
        host = wait_for(lambda: Host.objects.filter(ip=IP, key_state=Key.PENDING).first(), 60,
                        "the new agent's registration")  # fmt: skip
        assert "pending" in refused_run(IP)[0]
        keys.accept([IP])

        job = services.run("echo accepted", services.Targets(hosts=[IP]), "t")
        done = wait_state(job.host_tasks.get().task_id, {State.OK, State.ERROR}, timeout=60)
        assert (done.state, done.stdout_head) == (State.OK, "accepted\n")
        assert host.key_fingerprint == Host.objects.get(ip=IP).key_fingerprint
    finally:
        fleet.stop(f"agent-{IP}")


@pytest.mark.parametrize(
    "fields, why",
    [({"ip": "not-an-ip"}, "IPv4"), ({"hostname": "x" * 300}, "hostname"),
     ({"hostname": "db1\x1b[2K\rfake"}, "hostname"), ({"started_at": 9e12}, "future")],
)  # fmt: skip
def test_a_registration_with_fields_the_server_cannot_take_is_refused(fields, why, caplog):
    ip = fields.pop("ip", IP)
    with caplog.at_level(logging.WARNING, logger="cmdb.hosts.keys"):
        assert keys.register(signed_registration(ip, **fields)) == (None, "refused")
    assert why in caplog.text and not Host.objects.exists()


def test_a_replayed_registration_starts_no_job(settings, redis_url):
    from cmdb.hosts.tasks import register_agent

    settings.CMDB = {**settings.CMDB, "AUTO_ACCEPT": [ipaddress.IPv4Network(f"{IP}/32")],
                     "COLLECT_ON_START": True}  # fmt: skip
    key = Ed25519PrivateKey.generate()
    registration = signed_registration(IP, key).to_wire()

    register_agent(registration)  # the agent starts: a collection, signed by the server
    register_agent(registration)  # the same message again: nothing more
    register_agent(registration)
    older = signed_registration(IP, key, started_at=time.time() - 3600)  # an older one of its own
    register_agent(older.to_wire())

    assert Job.objects.count() == 1
    assert Host.objects.get(ip=IP).agent_started == registration["started_at"]


def test_the_fleet_wide_collection_skips_hosts_it_may_not_send_to(redis_url):
    from cmdb.assets.tasks import collect_all
    from tests.support.factories import make_host

    make_host("127.0.1.201")
    keys.register(signed_registration(IP))  # pending
    Host.objects.filter(ip=IP).update(agent_status="online")

    job = Job.objects.get(pk=collect_all())

    assert list(job.host_tasks.values_list("ip", flat=True)) == ["127.0.1.201"]


def test_a_later_batch_is_not_sent_to_a_host_rejected_meanwhile(redis_url):
    from cmdb.celery import app
    from cmdb.jobs import batches
    from cmdb.jobs.models import HostTask
    from tests.support.factories import make_host

    a, b = make_host("127.0.1.201"), make_host("127.0.1.202")
    job = services.run("true", services.Targets(hosts=[a.ip, b.ip]), "t")
    job.params = {"batch": 1}
    job.save()
    HostTask.objects.filter(job=job, ip=b.ip).update(batch=1, reach_deadline=None)
    HostTask.objects.filter(job=job, ip=a.ip).update(state=State.OK)
    keys.reject([b.ip])

    batches.advance(job.pk, app)

    task = HostTask.objects.get(job=job, ip=b.ip)
    assert task.state == State.ERROR and "no longer accepted" in task.error
