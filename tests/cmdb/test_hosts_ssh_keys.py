"""`hosts trust` and `hosts mode` are key management, as `keys accept` is: hosts.manage_keys and
a keys grant on every host; `hosts add --mode ssh` makes new hosts only."""

import socket

import pytest
from django.core.management import CommandError, call_command

from cmdb.access import services
from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import Host
from tests.support.api import make_group, make_user
from tests.support.factories import make_host

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cli_user")]

IP = "127.0.3.9"
ORIGINAL = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOriginalKeyOnRecordxxxxxxxxxxxxxxxxxxxxxx"


@pytest.fixture(autouse=True)
def gateway_key(settings, tmp_path):
    settings.CMDB = {**settings.CMDB, "GATEWAY_KEY": str(tmp_path / "gateway_key")}


def _host(ip: str, **fields) -> Host:
    host = make_host(ip)
    Host.objects.filter(pk=host.pk).update(**fields)
    return Host.objects.get(pk=host.pk)


def _closed_port() -> int:
    # A port nothing listens on: a check that passes goes on to connect, and is refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def keeper():
    """bob: hosts.manage_keys, and a grant of VIEW only on the group holding the ssh host."""
    host = _host(IP, mode="ssh", ssh_user="root", ssh_port=_closed_port(),
                     ssh_host_key=ORIGINAL)  # fmt: skip
    make_group("ssh", host)
    make_user("hosts.manage_keys", "hosts.view_host", "hosts.add_host", username="bob",
              everywhere=False)  # fmt: skip
    services.add("bob", ["view"], ["ssh"])
    return host


def test_trust_needs_a_keys_grant_not_view(keeper):
    with pytest.raises(CommandError, match=f"bob may not keys on {IP}"):
        call_command("hosts", "trust", IP, "--replace", "--as", "bob")
    assert Host.objects.get(ip=IP).ssh_host_key == ORIGINAL
    refused = AuditEntry.objects.get(action="key.trust")
    assert (refused.username, refused.outcome) == ("bob", "refused")

    # With a keys grant the check passes: the host is asked for its key (nothing listens).
    services.add("bob", ["keys"], ["ssh"])
    with pytest.raises(CommandError, match="not trusted"):
        call_command("hosts", "trust", IP, "--replace", "--as", "bob")
    assert Host.objects.get(ip=IP).ssh_host_key == ORIGINAL


def test_trust_needs_the_permission(keeper):
    make_user("hosts.view_host", username="carol")
    with pytest.raises(CommandError, match=r"hosts\.manage_keys"):
        call_command("hosts", "trust", IP, "--as", "carol")
    assert AuditEntry.objects.get(action="key.trust", username="carol").outcome == "refused"


def test_add_ssh_refuses_a_known_host_and_says_how(keeper):
    agent = _host("10.2.2.2", agent_key="agent-pem", key_state="accepted",
                  candidate_key="candidate-pem")  # fmt: skip
    known = r"already known: 10\.2\.2\.2; nothing added.*hosts mode 10\.2\.2\.2 --mode ssh"
    with pytest.raises(CommandError, match=known):
        call_command("hosts", "add", "10.2.2.3", "10.2.2.2", "--mode", "ssh", "--ssh-user",
                     "root", "--as", "bob")  # fmt: skip
    agent.refresh_from_db()
    assert (agent.mode, agent.agent_key, agent.candidate_key) == ("agent", "agent-pem",
                                                                  "candidate-pem")  # fmt: skip
    assert not Host.objects.filter(ip="10.2.2.3").exists()  # nothing added, none of them


def test_mode_needs_a_keys_grant_and_is_audited(keeper, capsys):
    agent = _host("10.2.2.2", agent_key="agent-pem", key_state="accepted")
    make_group("agents", agent)
    services.add("bob", ["view"], ["agents"])
    args = ("hosts", "mode", "10.2.2.2", "--mode", "ssh", "--ssh-user", "root", "--as", "bob")
    with pytest.raises(CommandError, match=r"10\.2\.2\.2"):
        call_command(*args)
    assert Host.objects.get(ip="10.2.2.2").agent_key == "agent-pem"
    assert AuditEntry.objects.get(action="key.mode").outcome == "refused"

    services.add("bob", ["keys"], ["agents"])
    call_command(*args)
    agent.refresh_from_db()
    assert agent.mode == "ssh" and agent.ssh_user == "root" and agent.ssh_host_key == ""
    assert agent.agent_key.startswith("-----BEGIN PUBLIC KEY") and agent.key_state == "accepted"
    assert "10.2.2.2: now ssh mode (run hosts trust)" in capsys.readouterr().out
    done = AuditEntry.objects.get(action="key.mode", outcome="ok")
    assert done.username == "bob" and done.detail["mode"] == "ssh"

    call_command("hosts", "mode", "10.2.2.2", "--mode", "agent", "--as", "bob")
    agent.refresh_from_db()
    assert (agent.mode, agent.agent_key, agent.key_state) == ("agent", "", "none")
