"""How many hosts a job may reach without confirming: CMDB_CONFIRM_ABOVE, a grant's own host
ceiling (the strictest grant covering the targets wins), and who needs no confirmation."""

import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from cmdb.access import grants, services
from cmdb.access.actor import Actor
from cmdb.access.models import Action, Grant
from cmdb.jobs import dispatch
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.exceptions import NeedsConfirmation
from cmdb.jobs.models import Job
from cmdb.jobs.services import Targets
from tests.support.api import make_group, make_user, token_client
from tests.support.factories import make_host
from tests.support.fleet import ROOT

pytestmark = pytest.mark.django_db

#: What dispatching every kind of job takes (grants then say where).
KINDS = ("jobs.run_command", "jobs.collect_facts")

#: Host rows without agents: the refusal path records and sends nothing.
IPS = [f"127.17.0.{i}" for i in range(1, 7)]
WEB, DB = IPS[:4], IPS[4:]


@pytest.fixture
def fleet_hosts(settings):
    settings.CMDB = {**settings.CMDB, "CONFIRM_ABOVE": 3}
    hosts = [make_host(ip, with_agent=False) for ip in IPS]
    make_group("web", *hosts[:4])
    make_group("db", *hosts[4:])
    return hosts


def check(by, ips, kind=JobKindChoices.COMMAND, **rolling) -> None:
    """Validate a request as dispatch would, recording nothing."""
    dispatch.check_request(Targets(hosts=ips, **rolling).request(kind, by, command="true"))


def confirmation(by, ips, **kwargs) -> NeedsConfirmation:
    with pytest.raises(NeedsConfirmation) as asked:
        check(by, ips, **kwargs)
    return asked.value


def as_user(user) -> Actor:
    return Actor(user, "api", "127.0.0.1")


def test_above_the_setting_a_user_needs_to_confirm_and_may(fleet_hosts):
    alice = make_user(*KINDS, username="alice")  # a grant of everything, without a ceiling

    asked = confirmation(as_user(alice), WEB)

    assert (asked.count, asked.ceiling, list(asked.by_field)) == (4, 3, ["confirm"])
    assert "(CMDB_CONFIRM_ABOVE)" in asked.problems[0]
    check(as_user(alice), WEB[:3])
    check(as_user(alice), WEB, confirm=True)


def test_a_grants_host_ceiling_is_the_users_own_and_is_named(fleet_hosts):
    bob = make_user(*KINDS, username="bob", everywhere=False)
    grant = services.add("bob", ["run", "collect"], ["web"], max_hosts=2)

    asked = confirmation(as_user(bob), WEB[:3])

    assert asked.ceiling == 2
    assert asked.problems[0].startswith(
        "this job would reach 3 hosts, more than the 2 allowed without confirming (the host "
        f"ceiling of grant {grant.pk})"
    )
    # A grant may raise it too: a ceiling above the setting's counts where it alone covers.
    services.add("bob", ["run"], ["db"], max_hosts=10)
    grant.max_hosts = 10
    grant.save()
    check(as_user(bob), WEB)
    assert grants.ceiling(bob, Action.RUN, fleet_hosts[:4], 3)[0] == 10


def test_the_strictest_grant_covering_the_targets_wins_and_others_do_not_count(fleet_hosts):
    carol = make_user(*KINDS, username="carol", everywhere=False)
    services.add("carol", ["run"], ["web"], max_hosts=10)
    strict = services.add("carol", ["run"], ["db"], max_hosts=1)
    services.add("carol", ["run"], ["web"], where=["os=none"], max_hosts=0)  # covers nobody
    web, both = fleet_hosts[:4], fleet_hosts

    assert grants.ceiling(carol, Action.RUN, web, 3) == (10, Grant.objects.get(
        users=carol, host_groups__name="web", where=[]))  # fmt: skip
    assert grants.ceiling(carol, Action.RUN, both, 3) == (1, strict)
    # A grant without a ceiling counts as the setting, the strictest still winning.
    services.add("carol", ["run"], ["web"])
    assert grants.ceiling(carol, Action.RUN, web, 3) == (3, None)
    # Grants for another action say nothing.
    assert grants.ceiling(carol, Action.PUSH, web, 3) == (3, None)


def test_a_superuser_and_the_cli_have_the_setting_the_servers_own_requests_none(fleet_hosts):
    root = make_user(superuser=True)
    services.add(root.username, ["run"], ["web"], max_hosts=100)  # no grant limits a superuser

    assert confirmation(as_user(root), WEB).ceiling == 3
    assert confirmation("cli:ops", WEB).ceiling == 3
    assert confirmation(Actor.system("cli"), WEB).ceiling == 3
    # Scheduled collections, a key accepted, an agent's start: nobody there to confirm.
    for by in ("schedule", "key accepted", "agent start 127.17.0.1", Actor.system("schedule")):
        check(by, IPS, kind=JobKindChoices.COLLECT)


def test_the_confirmation_is_asked_for_only_once_all_else_is_right(fleet_hosts):
    alice = make_user(*KINDS, username="alice")

    with pytest.raises(Exception) as refused:
        check(as_user(alice), WEB, batch="0")

    assert not isinstance(refused.value, NeedsConfirmation)
    assert list(refused.value.by_field) == ["batch"]


def test_the_api_says_the_grants_ceiling_and_records_nothing(fleet_hosts):
    dave = make_user("jobs.run_command", username="dave", everywhere=False)
    grant = services.add("dave", ["run"], ["web"], max_hosts=1)

    response = token_client(dave).post("/api/jobs/", {"command": "true", "groups": ["web"]},
                                       "json")  # fmt: skip

    assert response.status_code == 400
    assert response.json()["confirm"][0].startswith(
        f"this job would reach 4 hosts, more than the 1 allowed without confirming (the host "
        f"ceiling of grant {grant.pk})"
    )
    assert not Job.objects.exists()


@pytest.mark.parametrize("value", ["many", "-1", "2.5", "²"])
def test_a_wrong_confirm_above_setting_stops_the_server_saying_what_it_takes(value):
    env = {**os.environ, "CMDB_CONFIRM_ABOVE": value, "DJANGO_SETTINGS_MODULE": "cmdb.settings"}

    out = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
                         env=env, capture_output=True, text=True)  # fmt: skip

    assert out.returncode != 0
    assert (f"CMDB_CONFIRM_ABOVE must be a whole number of hosts (0 or more), not {value!r}; "
            "unset, it is 25") in out.stderr  # fmt: skip


def test_a_grants_ceiling_from_the_cli_is_listed_and_a_negative_one_refused(
    fleet_hosts, capsys, cli_user
):
    make_user(username="erin", everywhere=False)

    call_command("grants", "add", "erin", "--actions", "run", "--all-hosts", "--max-hosts", "0")
    call_command("grants", "list")

    assert "erin: run on all hosts (confirm above 0 hosts)" in capsys.readouterr().out
    with pytest.raises(CommandError) as refused:
        call_command("grants", "add", "erin", "--actions", "run", "--all-hosts",
                     "--max-hosts", "-1")  # fmt: skip
    assert refused.value.returncode == 2
    assert "a host ceiling is a number of hosts, 0 or more" in str(refused.value)
