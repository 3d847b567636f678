"""What the app records by itself: failed logins, group membership, a host's IP; the actor
being the request's user (middleware), an acting_as() block's, or the server."""

import pytest
from django.contrib.auth.models import User

from cmdb.access.actor import Actor
from cmdb.audit.context import acting_as
from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import Host, HostGroup
from tests.support.api import make_user

pytestmark = pytest.mark.django_db


def entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("seq"))


@pytest.mark.usefixtures("redis_url")  # where login attempts are counted (fail closed)
def test_a_failed_admin_login_is_recorded_with_the_name_tried_and_the_address(client):
    User.objects.create_user("alice", password="right")

    page = client.post("/admin/login/?next=/admin/", {"username": "alice", "password": "wrong"},
                       REMOTE_ADDR="198.51.100.4")  # fmt: skip

    assert page.status_code == 200  # the form again, with its error
    (entry,) = entries("login.failed")
    assert (entry.username, entry.via, entry.address, entry.outcome) == (
        "alice", "admin", "198.51.100.4", "failed")  # fmt: skip
    assert "wrong" not in str(entry.detail)


@pytest.mark.usefixtures("redis_url")
def test_a_successful_login_records_nothing(client):
    User.objects.create_user("alice", password="right", is_staff=True)

    page = client.post("/admin/login/?next=/admin/", {"username": "alice", "password": "right"},
                       REMOTE_ADDR="198.51.100.5")  # fmt: skip

    assert page.status_code == 302  # logged in

    assert not entries("login.failed")


@pytest.fixture
def hosts():
    return [Host.objects.create(ip=f"10.0.0.{n}") for n in (1, 2, 3)]


def test_hosts_added_to_and_removed_from_a_group_are_recorded(hosts):
    web = HostGroup.objects.create(name="web")
    alice = User.objects.create_user("alice")

    with acting_as(Actor(alice, "cli")):
        web.hosts.add(hosts[0], hosts[1])
        web.hosts.remove(hosts[1])
    hosts[2].groups.add(web)  # from the host's side, by the server
    web.hosts.clear()

    added, removed, reverse, cleared = entries("group.change")
    assert added.detail == {"group": "web", "added": ["10.0.0.1", "10.0.0.2"]}
    assert (added.username, added.via) == ("alice", "cli")
    assert added.targets_resolved == ["10.0.0.1", "10.0.0.2"]
    assert removed.detail == {"group": "web", "removed": ["10.0.0.2"]}
    assert reverse.detail == {"group": "web", "added": ["10.0.0.3"]}
    assert (reverse.username, reverse.via) == ("", "system")
    assert cleared.detail == {"group": "web", "removed": ["10.0.0.1", "10.0.0.3"]}


def test_deleting_a_group_records_who_was_in_it(hosts):
    db_group = HostGroup.objects.create(name="db")
    db_group.hosts.add(hosts[2])

    db_group.delete()

    assert entries("group.change")[-1].detail == {"group": "db", "deleted": True,
                                                  "removed": ["10.0.0.3"]}  # fmt: skip


def test_a_group_changed_in_the_admin_is_recorded_as_its_user_from_the_admin(client, hosts):
    group = HostGroup.objects.create(name="web")
    group.hosts.add(hosts[0])
    client.force_login(make_user(superuser=True, username="root"))

    page = client.post(f"/admin/hosts/hostgroup/{group.pk}/change/",
                       {"name": "web", "description": "", "hosts": [hosts[1].pk]},
                       REMOTE_ADDR="203.0.113.9")  # fmt: skip

    assert page.status_code == 302, page.content
    changes = entries("group.change")[1:]  # after the set-up's own
    assert [e.detail for e in changes] == [{"group": "web", "removed": ["10.0.0.1"]},
                                           {"group": "web", "added": ["10.0.0.2"]}]  # fmt: skip
    assert {(e.username, e.via, e.address) for e in changes} == {("root", "admin", "203.0.113.9")}


def test_a_hosts_ip_change_is_recorded_with_both_addresses(hosts):
    host = hosts[0]
    host.ip = "10.0.9.1"
    host.save()
    host.hostname = "web1"
    host.save()  # no IP change: nothing
    host.save(update_fields=["hostname"])  # a heartbeat's kind of save: not even a read

    (entry,) = entries("host.change")
    assert entry.detail == {"host": host.pk, "ip": {"from": "10.0.0.1", "to": "10.0.9.1"}}
    assert entry.hosts == " 10.0.0.1 10.0.9.1 "


def test_what_a_user_may_do_changing_is_recorded_from_either_side():
    from django.contrib.auth.models import Group, Permission

    alice = User.objects.create_user("alice")
    dbas = Group.objects.create(name="dbas")
    admin = Actor(make_user(username="root", superuser=True), "admin", "192.0.2.9")
    with acting_as(admin):
        alice.groups.add(dbas)  # dbas carries grants: alice now has them
        dbas.user_set.remove(alice)
        alice.user_permissions.add(Permission.objects.get(codename="run_command"))
        alice.is_superuser = True
        alice.save()
    details = [e.detail for e in entries("user.access")]
    assert details[-4:] == [
        {"user": "alice", "groups": {"added": ["dbas"]}},
        {"user": "alice", "groups": {"removed": ["dbas"]}},
        {"user": "alice", "permissions": {"added": ["jobs.run_command"]}},
        {"user": "alice", "created": False, "is_superuser": True},
    ]
    assert {e.username for e in entries("user.access")[-4:]} == {"root"}
    # A save that changes nothing of it (a login's last_login) records nothing.
    before = len(entries("user.access"))
    alice.save(update_fields=["last_login"])
    assert len(entries("user.access")) == before
