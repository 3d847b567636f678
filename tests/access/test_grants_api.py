"""Grants through the API (/api/grants/) and who may change what grants rest on: a host's IP
and a group's members, each with its own permission, in the admin."""

import pytest
from django.test import Client

from cmdb.access.models import Grant
from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import Host, HostGroup
from tests.support.api import make_group, make_user, token_client
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db

WEB, DB = "127.0.2.41", "127.0.2.42"


@pytest.fixture
def groups():
    make_group("web", make_host(WEB, with_agent=False))
    make_group("db", make_host(DB, with_agent=False))


def test_an_admin_adds_lists_and_removes_grants_through_the_api(groups):
    make_user(username="alice", everywhere=False)
    admin = token_client(make_user("access.view_grant", "access.add_grant",
                                   "access.delete_grant", everywhere=False))  # fmt: skip
    made = admin.post("/api/grants/", {"users": ["alice"], "actions": ["view", "run"],
                                       "host_groups": ["web"], "where": ["os=debian"],
                                       "max_hosts": 10}, "json")  # fmt: skip
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["text"] == "alice: view, run on web where os=debian" and body["max_hosts"] == 10
    listed = admin.get("/api/grants/").json()
    assert [g["id"] for g in listed["results"]] == [body["id"]]
    assert admin.delete(f"/api/grants/{body['id']}/").status_code == 204
    assert not Grant.objects.exists()
    assert list(AuditEntry.objects.filter(action__startswith="grant.").order_by("seq")
                .values_list("action", flat=True)) == ["grant.add", "grant.remove"]  # fmt: skip


def test_a_grant_as_given_is_refused_whole_with_every_reason(groups):
    admin = token_client(make_user("access.add_grant", everywhere=False))
    refused = admin.post("/api/grants/", {"users": ["nosuch"], "actions": ["run", "reboot"],
                                          "host_groups": ["nosuch"], "max_hosts": 0},
                         "json")  # fmt: skip
    assert refused.status_code == 400
    errors = refused.json()
    assert set(errors) >= {"users", "actions", "host_groups"}, errors
    nobody = admin.post("/api/grants/", {"actions": ["run"], "all_hosts": True}, "json")
    assert nobody.status_code == 400
    assert nobody.json() == {"users": ["give the users or groups the grant is for"]}
    assert not Grant.objects.exists()


def test_a_name_no_row_can_have_is_unknown_not_a_database_error(groups):
    # PostgreSQL refuses a NUL in text with an error of its own: a 500 if it reached a query.
    admin = token_client(make_user("access.add_grant", everywhere=False))
    for name in ("a\x00b", 7, "x" * 200):
        refused = admin.post("/api/grants/", {"users": [name], "actions": ["run"],
                                              "groups": [name], "host_groups": [name]},
                             "json")  # fmt: skip
        assert refused.status_code == 400, refused.content
        assert set(refused.json()) >= {"users", "groups", "host_groups"}
    assert not Grant.objects.exists()


def test_grants_need_the_access_permissions(groups):
    viewer = token_client(make_user("access.view_grant", everywhere=False))
    assert viewer.get("/api/grants/").status_code == 200
    attempt = viewer.post("/api/grants/", {"users": [], "actions": ["run"], "all_hosts": True},
                          "json")  # fmt: skip
    assert attempt.status_code == 403
    assert token_client(make_user(everywhere=False)).get("/api/grants/").status_code == 403


def _admin_client(*perms: str) -> Client:
    user = make_user("hosts.view_host", "hosts.change_host", "hosts.view_hostgroup",
                     "hosts.change_hostgroup", *perms)  # fmt: skip
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


def test_a_hosts_ip_needs_its_own_permission_in_the_admin(groups):
    host = Host.objects.get(ip=WEB)
    url = f"/admin/hosts/host/{host.pk}/change/"
    editor = _admin_client()
    page = editor.get(url).content.decode()
    assert 'name="ip"' not in page  # shown, not editable
    editor.post(url, {"ip": "127.0.2.49", "hostname": "renamed", "description": ""})
    host.refresh_from_db()
    assert host.ip == WEB

    Host.objects.filter(pk=host.pk).update(agent_key="an accepted key", key_state="accepted")
    mover = _admin_client("hosts.change_host_ip")
    assert 'name="ip"' in mover.get(url).content.decode()
    moved = mover.post(url, {"ip": "127.0.2.49", "hostname": "", "description": "",
                             **INLINE_FORMS})  # fmt: skip
    assert moved.status_code == 302, moved.content.decode()[-3000:]
    host.refresh_from_db()
    assert host.ip == "127.0.2.49"
    # The key accepted for the old address proves nothing of the new one's agent.
    assert (host.agent_key, host.key_state) == ("", "pending")
    assert AuditEntry.objects.get(action="key.delete").detail["reason"] == "IP changed"
    entry = AuditEntry.objects.get(action="host.change")
    assert entry.via == "admin" and entry.detail["ip"] == {"from": WEB, "to": "127.0.2.49"}


def test_a_hosts_ip_is_not_movable_in_the_admin_without_the_keys_action(groups):
    host = Host.objects.get(ip=WEB)
    user = make_user("hosts.view_host", "hosts.change_host", "hosts.change_host_ip",
                     everywhere=False)  # fmt: skip
    Grant.objects.create(actions=["view"], all_hosts=True).users.add(user)
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    assert 'name="ip"' not in client.get(f"/admin/hosts/host/{host.pk}/change/").content.decode()


def test_a_groups_members_need_their_own_permission_in_the_admin(groups):
    group = HostGroup.objects.get(name="web")
    url = f"/admin/hosts/hostgroup/{group.pk}/change/"
    db = Host.objects.get(ip=DB)
    editor = _admin_client()
    editor.post(url, {"name": "web", "description": "", "hosts": [db.pk]})
    assert list(group.hosts.values_list("ip", flat=True)) == [WEB]

    member = _admin_client("hosts.change_hostgroup_members")
    changed = member.post(url, {"name": "web", "description": "", "hosts": [db.pk]})
    assert changed.status_code == 302
    assert list(group.hosts.values_list("ip", flat=True)) == [DB]
    entries = AuditEntry.objects.filter(action="group.change", via="admin")
    assert {tuple(sorted(e.detail)) for e in entries} >= {("added", "group"), ("group", "removed")}


#: The admin host page's inlines (assets, changes), empty: what its form posts with them.
INLINE_FORMS = {
    f"{prefix}-{field}": value
    for prefix in ("assets", "changes")
    for field, value in (
        ("TOTAL_FORMS", "0"),
        ("INITIAL_FORMS", "0"),
        ("MIN_NUM_FORMS", "0"),
        ("MAX_NUM_FORMS", "1000"),
    )
}
