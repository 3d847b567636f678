"""Host targeting and the `hosts` command."""

import ipaddress

import pytest
from django.core.management import CommandError, call_command

from cmdb.hosts import keys
from cmdb.hosts.models import Host, TargetError
from tests.support.factories import make_host, signed_registration

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("cli_user")]


def test_resolve_accepts_ips_and_hostnames_in_order_without_duplicates():
    a = make_host("10.0.3.55", hostname="web1")
    b = make_host("10.4.3.4", hostname="db1")

    assert Host.objects.resolve(["db1", "10.0.3.55", "10.4.3.4", " web1 "]) == [b, a]


def test_resolve_names_every_bad_target_in_the_order_given():
    make_host("10.0.3.55", hostname="web1")

    with pytest.raises(TargetError) as err:
        Host.objects.resolve(["10.0.3", "10.9.9.9", "web1", "nope", "999.1.1.1", ""])

    assert err.value.problems == [
        "malformed IP address: '10.0.3'",
        "unknown host 10.9.9.9 (not in the inventory: add it with `manage.py hosts add`)",
        "unknown host 'nope' (no host has that IP or hostname)",
        "malformed IP address: '999.1.1.1'",
        "malformed IP address: ''",
    ]


def test_resolve_refuses_a_hostname_shared_by_several_hosts():
    make_host("10.0.0.1", hostname="box")
    make_host("10.0.0.2", hostname="box")

    with pytest.raises(TargetError, match=r"'box' matches 2 hosts \(10.0.0.1, 10.0.0.2\)"):
        Host.objects.resolve(["box"])


def test_register_agent_creates_the_host_and_keeps_an_operators_hostname(settings):
    settings.CMDB = {**settings.CMDB, "AUTO_ACCEPT": [ipaddress.IPv4Network("10.0.0.0/24")]}
    make_host("10.0.0.9", hostname="named-by-ops", with_agent=False, key=False)

    host, _ = keys.register(signed_registration("10.0.0.9", hostname="from-agent", agent_pid=42))
    new, _ = keys.register(signed_registration("10.0.0.10", hostname="from-agent"))

    assert (host.hostname, host.agent_status, host.agent_pid) == ("named-by-ops", "online", 42)
    assert new.hostname == "from-agent"
    settings.CMDB = {**settings.CMDB, "AUTO_REGISTER": False}
    assert keys.register(signed_registration("10.0.0.11")) == (None, "unknown")


def test_hosts_command_adds_lists_and_removes(capsys):
    call_command("hosts", "add", "10.1.1.1", "--hostname", "app1")
    call_command("hosts", "add", "10.1.1.1", "10.1.1.2")
    call_command("hosts")
    out = capsys.readouterr().out
    assert "added: 10.1.1.1" in out and "already known: 10.1.1.1" in out
    assert "10.1.1.1" in out and "app1" in out and "never" in out

    call_command("hosts", "remove", "10.1.1.2")
    assert list(Host.objects.values_list("ip", flat=True)) == ["10.1.1.1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "10.1.1"], "malformed IP address: '10.1.1'"),
        (["remove", "10.9.9.9"], "unknown host(s): 10.9.9.9; nothing removed"),
        (["add", "10.1.1.1", "10.1.1.2", "--hostname", "x"], "--hostname names one host"),
    ],
)
def test_hosts_command_refuses_bad_input(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("hosts", *args)
