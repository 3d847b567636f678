"""Grants (cmdb.access): who may do what on which hosts. A dispatch reaches only the hosts the
requester's grants cover; every other target is refused by name and nothing is recorded."""

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from cmdb.access import grants, services
from cmdb.access.models import Action, Grant
from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import Host
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import Job
from tests.support.api import make_facts, make_group, make_user, poll, token_client
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS

A, B = AGENT_IPS
RUNNER = ("jobs.run_command", "jobs.view_job", "jobs.view_hosttask", "jobs.view_output")


@pytest.fixture
def fleet_hosts(db):
    ips = ("127.0.2.11", "127.0.2.12", "127.0.2.13")
    hosts = {ip: make_host(ip, with_agent=False) for ip in ips}
    make_group("web", hosts["127.0.2.11"], hosts["127.0.2.12"])
    make_group("db", hosts["127.0.2.13"])
    make_facts(hosts["127.0.2.11"], os="debian")
    make_facts(hosts["127.0.2.12"], os="rocky")
    return hosts


def allowed(user, action) -> set[str]:
    return set(grants.hosts_for(user, action).values_list("ip", flat=True))


@pytest.mark.django_db
def test_a_grant_covers_its_host_groups_narrowed_by_facts_and_only_its_actions(fleet_hosts):
    alice = make_user(username="alice", everywhere=False)
    services.add("alice", ["run", "view"], ["web"])
    assert allowed(alice, Action.RUN) == {"127.0.2.11", "127.0.2.12"}
    assert allowed(alice, Action.PUSH) == set()

    bob = make_user(username="bob", everywhere=False)
    services.add("bob", ["run"], ["web"], where=["os=debian"])
    assert allowed(bob, Action.RUN) == {"127.0.2.11"}

    # Through a Django group of users; and the union of several grants.
    dbas = Group.objects.create(name="dbas")
    carol = make_user(username="carol", everywhere=False)
    carol.groups.add(dbas)
    services.add("@dbas", ["run"], ["db"])
    services.add("carol", ["run"], ["web"], where=["os=rocky"])
    assert allowed(carol, Action.RUN) == {"127.0.2.13", "127.0.2.12"}


@pytest.mark.django_db
def test_a_host_that_joins_a_group_is_covered_at_once(fleet_hosts):
    alice = make_user(username="alice", everywhere=False)
    services.add("alice", ["run"], ["db"])
    newcomer = make_host("127.0.2.14", with_agent=False)
    assert "127.0.2.14" not in allowed(alice, Action.RUN)
    newcomer.groups.add(*Grant.objects.get().host_groups.all())
    assert "127.0.2.14" in allowed(alice, Action.RUN)


@pytest.mark.django_db
def test_superusers_everything_nobody_else_anything_without_a_grant(fleet_hosts):
    assert allowed(make_user(superuser=True), Action.RUN) == set(fleet_hosts)
    assert allowed(make_user(*RUNNER, everywhere=False), Action.RUN) == set()
    gone = make_user(username="gone")
    gone.is_active = False
    gone.save()
    assert allowed(gone, Action.RUN) == set()


@pytest.mark.django_db
def test_a_grant_as_given_is_checked_whole(fleet_hosts):
    make_user(username="alice", everywhere=False)
    with pytest.raises(Exception) as refused:
        services.add("alice", ["run", "reboot"], ["web", "nope"], where=["colour=blue"])
    text = str(refused.value)
    assert "unknown action 'reboot'" in text and "unknown host group 'nope'" in text
    assert "unknown field 'colour'" in text
    with pytest.raises(Exception, match="give host groups, or all hosts"):
        services.add("alice", ["run"])
    with pytest.raises(Exception, match="no user 'mallory'"):
        services.add("mallory", ["run"], all_hosts=True)
    assert not Grant.objects.exists()


@pytest.mark.django_db
def test_the_grants_command_adds_lists_and_removes(fleet_hosts, capsys, cli_user):
    make_user(username="alice", everywhere=False)
    call_command("grants", "add", "alice", "--actions", "run,view", "--host-group", "web",
                 "--where", "os=debian")  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("grant ") and "alice: run, view on web where os=debian" in out
    call_command("grants", "list")
    assert "alice: run, view on web" in capsys.readouterr().out
    pk = Grant.objects.get().pk
    call_command("grants", "remove", str(pk))
    assert f"removed grant {pk}" in capsys.readouterr().out
    assert list(AuditEntry.objects.filter(action__startswith="grant.").order_by("seq").values_list(
        "action", "detail__grant")) == [("grant.add", pk), ("grant.remove", pk)]  # fmt: skip
    with pytest.raises(CommandError) as refused:
        call_command("grants", "add", "alice", "--actions", "run")
    assert refused.value.returncode == 2


# --- through the API, to real agents ------------------------------------------------------------
@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_a_user_granted_group_web_runs_there_and_is_refused_outside(fleet):
    web, other = make_host(A), make_host(B)
    make_group("web", web)
    user = make_user(*RUNNER, username="webops", everywhere=False)
    services.add("webops", ["run", "view"], ["web"])
    client = token_client(user)

    refused = client.post("/api/jobs/", {"command": "echo no", "hosts": [A, B]}, "json")
    assert refused.status_code == 403, refused.content
    assert refused.json() == {"hosts": [f"webops may not run on {B}: no grant of theirs covers it"]}
    assert not Job.objects.exists()
    # The attempt is in the audit trail: who, from where, what, and why not.
    entry = AuditEntry.objects.get(action="refused", username="webops")
    assert (entry.username, entry.via, entry.command) == ("webops", "api", "echo no")
    assert entry.targets_given["hosts"] == [A, B] and B in entry.detail["reason"][0]

    accepted = client.post("/api/jobs/", {"command": "echo yes", "hosts": [A]}, "json")
    assert accepted.status_code == 202, accepted.content
    job = poll(client, accepted.json()["url"], lambda b: b["done"], 60, "the granted run")
    assert job["summary"] == {State.OK: 1} and job["requested_by"] == "webops"
    entry = AuditEntry.objects.get(action="dispatch", username="webops")
    assert (str(entry.job_id), entry.targets_resolved, entry.username) == (job["id"], [A], "webops")
    assert Host.objects.filter(pk=other.pk).exists()
