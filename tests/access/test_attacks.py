"""What a hostile reviewer tried against grants and the audit trail, and what now stops it."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from cmdb.access import grants, services
from cmdb.access.actor import Actor
from cmdb.access.models import Action
from cmdb.audit.context import acting_as
from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import Host
from cmdb.jobs import services as job_services
from cmdb.jobs.exceptions import NotPermitted
from tests.support.api import make_facts, make_group, make_job, make_user, token_client
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db

WEB, PROD, NEW = "127.0.2.61", "127.0.2.62", "127.0.2.63"


@pytest.fixture
def hosts():
    web, prod = make_host(WEB, with_agent=False), make_host(PROD, with_agent=False)
    make_group("web", web)
    make_group("prod", prod)
    make_facts(web, os="debian")
    make_facts(prod, os="rocky")
    return web, prod


@pytest.mark.parametrize("path", ["/api/jobs/fetch/"])
def test_a_fetch_outside_the_grants_is_403_and_in_the_audit_trail(hosts, path):
    user = make_user("jobs.run_command", username="webops", everywhere=False)
    services.add("webops", ["fetch", "view"], ["web"])
    refused = token_client(user).post(path, {"path": "/etc/shadow", "hosts": [PROD]}, "json")
    assert refused.status_code == 403, refused.content
    assert refused.json() == {"hosts": [f"webops may not fetch on {PROD}: no grant of theirs "
                                        "covers it"]}  # fmt: skip
    entry = AuditEntry.objects.get(action="refused")
    assert (entry.username, entry.via, entry.kind) == ("webops", "api", "fetch")


def test_a_grant_cannot_narrow_by_names_anyone_may_edit(hosts):
    make_user(username="alice", everywhere=False)
    for expr in ("group!=prod", "hostname~web", "status=online"):
        with pytest.raises(Exception, match="a grant cannot narrow by"):
            services.add("alice", ["run"], all_hosts=True, where=[expr])


def test_a_negated_fact_covers_no_host_whose_facts_are_unknown(hosts):
    alice = make_user(username="alice", everywhere=False)
    services.add("alice", ["run"], all_hosts=True, where=["os!=windows"])
    make_host(NEW, with_agent=False)  # no facts yet
    allowed = set(grants.hosts_for(alice, Action.RUN).values_list("ip", flat=True))
    assert allowed == {WEB, PROD}


def test_a_user_named_like_the_server_does_not_own_its_jobs(hosts):
    schedule = make_user("jobs.cancel_job", username="schedule", everywhere=False)
    services.add("schedule", ["view"], all_hosts=True)
    job = make_job(WEB, state="running", requested_by="schedule")
    with pytest.raises(NotPermitted, match=f"schedule may not cancel on {WEB}"):
        job_services.cancel(str(job.pk), actor=Actor(schedule, "cli"))


def test_an_empty_as_is_refused_not_taken_for_the_default(hosts, cli_user):
    with pytest.raises(CommandError, match="--as names nobody"):
        call_command("hosts", "--as", " ")


def test_what_widens_access_is_recorded(hosts):
    root = Actor(make_user(username="root", superuser=True), "admin")
    with acting_as(root):
        ops = Group.objects.create(name="ops")
        ops.permissions.add(Permission.objects.get(codename="run_command"))
        host = Host.objects.create(ip=NEW)
        host.delete()
        Token.objects.create(user=root.user)
    details = {e.action: e.detail for e in AuditEntry.objects.filter(username="root")}
    assert details["user.access"] == {
        "group": "ops",
        "permissions": {"added": ["jobs.run_command"]},
    }
    assert details["host.add"]["hostname"] == "" and details["host.remove"]["groups"] == []
    assert details["token.add"] == {"user": "root"}
    assert "key" not in str(details["token.add"])


def test_only_superusers_see_or_make_api_tokens_in_the_admin(hosts):
    staff = make_user("authtoken.view_tokenproxy", "authtoken.add_tokenproxy", username="staff")
    staff.is_staff = True
    staff.save()
    Token.objects.create(user=make_user(username="victim", superuser=True))
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 403
    client.force_login(make_user(username="boss", superuser=True))
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 200


def test_a_later_batch_is_not_sent_once_its_requester_lost_the_grant(hosts, redis_url):
    from cmdb.celery import app
    from cmdb.jobs import batches
    from cmdb.jobs.models import HostTask

    web2 = make_host("127.0.2.64", with_agent=False)
    web2.groups.add(*hosts[0].groups.all())
    alice = make_user("jobs.run_command", username="alice", everywhere=False)
    services.add("alice", ["run"], ["web"])
    job = job_services.run("true", job_services.Targets(hosts=[WEB, web2.ip], batch=1),
                           Actor(alice, "cli"))  # fmt: skip
    first, held = HostTask.objects.filter(job=job).order_by("batch")
    HostTask.objects.filter(pk=first.pk).update(state="ok")
    alice.grants.all().delete()

    assert batches.advance(job.pk, app) == "sent"

    held.refresh_from_db()
    assert held.state == "error" and held.reach_deadline is None
    assert held.error.startswith("not sent: alice may no longer act on this host")
