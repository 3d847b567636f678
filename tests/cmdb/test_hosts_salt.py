"""`hosts add --mode salt --minion ID` and `hosts salt-minions` (the salt gateway's hosts)."""

import pytest
from django.core.management import CommandError, call_command

from cmdb.hosts import ssh
from cmdb.hosts.choices import KeyStateChoices, ModeChoices
from cmdb.hosts.models import Host
from tests.support.factories import make_host

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cli_user")]


@pytest.fixture(autouse=True)
def gateway_key(settings, tmp_path):
    settings.CMDB = {**settings.CMDB, "GATEWAY_KEY": str(tmp_path / "gateway_key")}


def test_add_a_salt_host_and_list_the_gateways_minions(capsys):
    call_command("hosts", "add", "10.0.8.5", "--mode", "salt", "--minion", "web01")
    call_command("hosts", "add", "10.0.8.6", "--mode", "salt", "--minion", "db01.example")
    host = Host.objects.get(ip="10.0.8.5")
    assert (host.mode, host.salt_minion, host.hostname) == (ModeChoices.SALT, "web01", "web01")
    # Served at once: the gateways' key is its key, accepted (no registration to wait for).
    assert host.key_state == KeyStateChoices.ACCEPTED
    assert host.agent_key == ssh.gateway_pem()
    out = capsys.readouterr().out
    assert "added salt 10.0.8.5 (minion web01); the salt gateway serves it" in out

    call_command("hosts", "salt-minions")
    assert capsys.readouterr().out.strip() == "10.0.8.5=web01,10.0.8.6=db01.example"


def test_an_agent_host_moved_to_salt_mode_takes_the_gateways_key():
    make_host("10.0.8.7")  # its agent's key accepted
    call_command("hosts", "add", "10.0.8.7", "--mode", "salt", "--minion", "app7")
    host = Host.objects.get(ip="10.0.8.7")
    assert (host.mode, host.salt_minion) == (ModeChoices.SALT, "app7")
    # Its agent's key no longer speaks for it: what the salt gateway signs does.
    assert (host.agent_key, host.key_state) == (ssh.gateway_pem(), KeyStateChoices.ACCEPTED)
    assert host.key_fingerprint == ssh.gateway_fingerprint()


@pytest.mark.parametrize("args", [
    ["10.0.8.5", "--mode", "salt"],                                  # no minion
    ["10.0.8.5", "10.0.8.6", "--mode", "salt", "--minion", "web01"],  # one minion, two IPs
    ["10.0.8.5", "--mode", "salt", "--minion", "web01;rm -rf /"],     # not a minion id
    ["10.0.8.5", "--minion", "web01"],                                # --minion without salt
    ["10.0.8.5", "--mode", "salt", "--minion", "web*"],               # a glob: many minions
    ["10.0.8.5", "--mode", "salt", "--minion", "web0[1-2]"],
    ["10.0.8.5", "--mode", "salt", "--minion", "web01,db01"],         # a list
])  # fmt: skip
def test_refused(args):
    with pytest.raises(CommandError) as caught:
        call_command("hosts", "add", *args)
    assert caught.value.returncode == 2
    assert not Host.objects.exists()


def test_a_glob_minion_id_is_a_clear_error():
    with pytest.raises(CommandError, match=r"--minion 'web\*': not a minion id .*no glob"):
        call_command("hosts", "add", "10.0.8.5", "--mode", "salt", "--minion", "web*")


def test_push_and_fetch_to_a_salt_host_are_refused_at_dispatch(tmp_path):
    from cmdb.jobs import services
    from cmdb.jobs.exceptions import Refused
    from cmdb.jobs.models import Job

    make_host("10.0.8.5")
    make_host("10.0.8.6")
    Host.objects.filter(ip="10.0.8.5").update(mode=ModeChoices.SALT, salt_minion="web01")
    src = tmp_path / "app.conf"
    src.write_text("x=1\n")
    targets = services.Targets(hosts=["10.0.8.5", "10.0.8.6"])
    with pytest.raises(Refused) as caught:
        services.push(str(src), "/tmp/app.conf", targets, "tester")
    assert caught.value.by_field["targets"] == [
        "push is not supported in salt mode: 10.0.8.5 (minion web01)"]  # fmt: skip
    with pytest.raises(Refused, match=r"fetch is not supported in salt mode: 10\.0\.8\.5"):
        services.fetch("/etc/hostname", targets, "tester")
    assert not Job.objects.exists()


def test_a_host_moved_to_salt_mode_is_in_the_audit_trail():
    from cmdb.audit.choices import AuditActionChoices
    from cmdb.audit.models import AuditEntry

    call_command("hosts", "add", "10.0.8.7")
    assert AuditEntry.objects.filter(action=AuditActionChoices.HOST_ADD).count() == 1
    call_command("hosts", "add", "10.0.8.7", "--mode", "salt", "--minion", "app7")
    call_command("hosts", "add", "10.0.8.7", "--mode", "salt", "--minion", "app7")  # no change
    call_command("hosts", "add", "10.0.8.7", "--mode", "salt", "--minion", "app8")
    entries = list(AuditEntry.objects.filter(action=AuditActionChoices.HOST_CHANGE).order_by("pk"))
    assert [e.detail["salt_minion"] for e in entries] == [
        {"from": "", "to": "app7"},
        {"from": "app7", "to": "app8"},
    ]
    assert entries[0].detail["mode"] == {"from": "agent", "to": "salt"}
    assert entries[0].targets_resolved == ["10.0.8.7"] and entries[0].username
