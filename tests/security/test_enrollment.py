"""Agents' keys, accepted like salt-key's: a host whose key is not accepted receives nothing; a
registration proves it holds its key; a changed key makes the host pending again, loudly; a
flood of forged registrations is capped."""

import logging

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command

from cmdb.hosts import keys
from cmdb.hosts.choices import KeyStateChoices as Key
from cmdb.hosts.models import Host
from cmdb.jobs import services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.exceptions import Refused
from cmdb.jobs.models import Job
from tests.support.api import make_user, token_client
from tests.support.cli import wait_state
from tests.support.factories import signed_registration
from tests.support.fleet import wait_for

IP = "127.0.1.200"  # beyond the suite's auto-accepted agents
pytestmark = pytest.mark.django_db


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
    assert (outcome, host.key_state, host.agent_pid) == ("same key", Key.ACCEPTED, 99)


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

    assert keys.register(registration) == (None, "unsigned")
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
