"""Hosts and host groups written through the API: model permissions, view grants, validation
(no 5xx on what people mistype), and every change in the audit trail."""

import uuid

import pytest
from rest_framework.test import APIClient

from cmdb.access import attempts
from cmdb.access.models import Action, Grant
from cmdb.audit.choices import AuditActionChoices as A
from cmdb.audit.models import AuditEntry
from cmdb.hosts import keys
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.models import Job
from tests.support.api import make_group, make_user, token_client
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db


def entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("pk"))


def test_a_host_is_added_changed_and_removed_and_each_is_audited(client_with):
    api = client_with("hosts.view_host", "hosts.add_host", "hosts.change_host",
                      "hosts.change_host_ip", "hosts.delete_host", username="ops")  # fmt: skip

    made = api.post("/api/hosts/", {"ip": "10.9.0.1", "hostname": "web1"}, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["ip"] == "10.9.0.1" and made.json()["key_state"] == "none"
    pk = made.json()["id"]
    renamed = api.patch(f"/api/hosts/{pk}/", {"hostname": "web-1"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["hostname"] == "web-1"
    moved = api.patch(f"/api/hosts/{pk}/", {"ip": "10.9.0.2"}, format="json")
    assert moved.status_code == 200 and Host.objects.get(pk=pk).ip == "10.9.0.2"
    assert api.delete(f"/api/hosts/{pk}/").status_code == 204
    assert not Host.objects.filter(pk=pk).exists()

    assert [e.username for e in entries(A.HOST_ADD)] == ["ops"]
    changes = [e.detail for e in entries(A.HOST_CHANGE)]
    assert changes == [{"host": pk, "hostname": {"from": "web1", "to": "web-1"}},
                       {"host": pk, "ip": {"from": "10.9.0.1", "to": "10.9.0.2"}}]  # fmt: skip
    assert entries(A.HOST_REMOVE)[0].targets_resolved == ["10.9.0.2"]


@pytest.mark.parametrize("body, field", [
    ({"ip": "10.9.0.300"}, "ip"),
    ({"ip": "::1"}, "ip"),
    ({"ip": "not an ip"}, "ip"),
    ({"ip": "10.9.0.1", "hostname": "a\x00b"}, "hostname"),
    ({"ip": "10.9.0.1", "hostname": "a\x1b[2Jb"}, "hostname"),
    ({"ip": "10.9.0.1", "hostname": "x" * 256}, "hostname"),
    ({"ip": "10.9.0.1", "agent_status": "online", "key_state": "accepted"}, None),
])  # fmt: skip
def test_what_is_wrong_in_a_new_host_is_a_400_naming_it(client_with, body, field):
    api = client_with("hosts.view_host", "hosts.add_host")
    answer = api.post("/api/hosts/", body, format="json")
    if field is None:  # what only its agent says is read-only: ignored, not believed
        assert answer.status_code == 201
        assert Host.objects.get(ip="10.9.0.1").key_state == "none"
        return
    assert answer.status_code == 400, answer.content
    assert field in answer.json()
    assert not Host.objects.exists()


def test_an_ip_already_known_is_a_400():
    make_host("10.9.0.1")
    api = token_client(make_user("hosts.view_host", "hosts.add_host"))
    answer = api.post("/api/hosts/", {"ip": "10.9.0.1"}, format="json")
    assert answer.status_code == 400 and "already exists" in answer.json()["ip"][0]


def test_each_write_takes_its_own_permission(client_with):
    host = make_host("10.9.0.1", hostname="a")
    reader = client_with("hosts.view_host")
    assert reader.post("/api/hosts/", {"ip": "10.9.0.9"}, format="json").status_code == 403
    assert reader.patch(f"/api/hosts/{host.pk}/", {"hostname": "b"},
                        format="json").status_code == 403  # fmt: skip
    assert reader.delete(f"/api/hosts/{host.pk}/").status_code == 403
    # Renaming is not moving: the IP is every command's queue.
    renamer = client_with("hosts.view_host", "hosts.change_host")
    moved = renamer.patch(f"/api/hosts/{host.pk}/", {"ip": "10.9.0.2"}, format="json")
    assert moved.status_code == 403 and "hosts.change_host_ip" in moved.json()["ip"][0]
    assert Host.objects.get(pk=host.pk).ip == "10.9.0.1"
    assert renamer.patch(f"/api/hosts/{host.pk}/", {"hostname": "b"},
                         format="json").status_code == 200  # fmt: skip
    # No PUT: replacing a host whole would reset what its agent reported.
    assert renamer.put(f"/api/hosts/{host.pk}/", {"ip": "10.9.0.1"},
                       format="json").status_code == 405  # fmt: skip


def test_a_host_outside_ones_grants_cannot_be_changed_or_removed_nor_put_in_a_group():
    web, db = make_host("10.9.0.1"), make_host("10.9.0.2")
    make_group("web", web)
    make_group("db", db)
    user = make_user(
        "hosts.view_host",
        "hosts.view_hostgroup",
        "hosts.change_host",
        "hosts.delete_host",
        "hosts.change_hostgroup_members",
        everywhere=False,
    )
    Grant.objects.create(actions=[Action.VIEW]).host_groups.add(HostGroup.objects.get(name="web"))
    Grant.objects.get().users.add(user)  # fmt: skip
    api = token_client(user)
    assert api.delete(f"/api/hosts/{db.pk}/").status_code == 404
    assert api.patch(f"/api/hosts/{db.pk}/", {"hostname": "x"}, format="json").status_code == 404
    web_group = HostGroup.objects.get(name="web")
    put_in = api.patch(f"/api/host-groups/{web_group.pk}/", {"hosts": ["10.9.0.1", "10.9.0.2"]},
                       format="json")  # fmt: skip
    assert put_in.status_code == 400 and "10.9.0.2" in str(put_in.json()["hosts"])
    assert list(web_group.hosts.values_list("ip", flat=True)) == ["10.9.0.1"]
    assert Host.objects.filter(pk=db.pk).exists()


def test_a_group_is_made_filled_emptied_and_removed_and_each_is_audited(client_with):
    make_host("10.9.0.1")
    make_host("10.9.0.2")
    api = client_with("hosts.view_host", "hosts.view_hostgroup", "hosts.add_hostgroup",
                      "hosts.change_hostgroup", "hosts.change_hostgroup_members",
                      "hosts.delete_hostgroup")  # fmt: skip
    made = api.post(
        "/api/host-groups/",
        {"name": "web", "description": "front", "hosts": ["10.9.0.2", "10.9.0.1"]},
        format="json",
    )
    assert made.status_code == 201, made.content
    assert made.json()["hosts"] == ["10.9.0.1", "10.9.0.2"]
    pk = made.json()["id"]
    fewer = api.patch(f"/api/host-groups/{pk}/", {"hosts": ["10.9.0.2"]}, format="json")
    assert fewer.status_code == 200 and fewer.json()["hosts"] == ["10.9.0.2"]
    assert api.delete(f"/api/host-groups/{pk}/").status_code == 204
    details = [e.detail for e in entries(A.GROUP_CHANGE)]
    assert details[0] == {"group": "web", "created": True, "description": "front"}
    assert {"group": "web", "removed": ["10.9.0.1"]} in details
    assert details[-1] == {"group": "web", "deleted": True, "removed": ["10.9.0.2"]}


def test_members_the_requester_may_not_view_stay_in_the_group():
    seen, unseen = make_host("10.9.0.1"), make_host("10.9.0.2")
    group = make_group("mixed", seen, unseen)
    make_group("mine", seen)
    user = make_user("hosts.view_host", "hosts.view_hostgroup", "hosts.change_hostgroup_members",
                     everywhere=False)  # fmt: skip
    grant = Grant.objects.create(actions=[Action.VIEW])
    grant.host_groups.add(HostGroup.objects.get(name="mine"))
    grant.users.add(user)
    answer = token_client(user).patch(f"/api/host-groups/{group.pk}/", {"hosts": []},
                                      format="json")  # fmt: skip
    assert answer.status_code == 200 and answer.json()["hosts"] == []
    assert list(group.hosts.values_list("ip", flat=True)) == ["10.9.0.2"]


def test_members_alone_take_the_members_permission_and_a_rename_the_change_one(client_with):
    group = make_group("web", make_host("10.9.0.1"))
    members = client_with("hosts.view_host", "hosts.view_hostgroup",
                          "hosts.change_hostgroup_members")  # fmt: skip
    assert members.patch(f"/api/host-groups/{group.pk}/", {"hosts": []},
                         format="json").status_code == 200  # fmt: skip
    renamed = members.patch(f"/api/host-groups/{group.pk}/", {"name": "front"}, format="json")
    assert renamed.status_code == 403 and HostGroup.objects.get(pk=group.pk).name == "web"
    bad = client_with("hosts.view_hostgroup", "hosts.add_hostgroup").post(
        "/api/host-groups/", {"name": "no spaces here"}, format="json"
    )
    assert bad.status_code == 400 and "name" in bad.json()


def login(client, username, password, address="127.0.0.1", **headers):
    return client.post("/api/token/", {"username": username, "password": password},
                       format="json", REMOTE_ADDR=address, **headers)  # fmt: skip


def test_a_token_for_a_password_and_the_wrong_one_audited(login_counts):
    make_user(username="alice")  # password "pw"
    anonymous = APIClient()
    answer = login(anonymous, "alice", "pw")
    assert answer.status_code == 200, answer.content
    token = answer.json()["token"]
    who = APIClient()
    who.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert who.get("/api/token/").json() == {"username": "alice"}
    assert anonymous.get("/api/token/").status_code == 401

    wrong = login(anonymous, "alice", "guess")
    assert wrong.status_code == 400 and "token" not in wrong.json()
    failed = entries(A.LOGIN_FAILED)
    assert [e.username for e in failed] == ["alice"]
    assert "guess" not in str(failed[0].detail)


def test_failed_logins_are_limited_per_address_whatever_the_name_or_forwarded_for(login_counts):
    make_user(username="alice")
    anonymous = APIClient()
    codes = [login(anonymous, f"user{i}", "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code
             for i in range(attempts.PER_ADDRESS + 1)]  # fmt: skip
    assert codes == [400] * attempts.PER_ADDRESS + [429], codes
    # Even the right password waits: the address is what is being slowed down.
    late = login(anonymous, "alice", "pw")
    assert late.status_code == 429 and int(late["Retry-After"]) > 0
    assert "too many failed logins" in late.json()["detail"]
    # Counted in Redis, where every worker (process) reads the same count.
    keys = [k.decode() for k in login_counts.scan_iter(f"{attempts.PREFIX}addr:*")]
    assert keys == [f"{attempts.PREFIX}addr:127.0.0.1"]
    assert int(login_counts.get(keys[0])) == attempts.PER_ADDRESS
    assert login(anonymous, "alice", "pw", address="127.0.0.2").status_code == 200


def test_failed_logins_are_limited_per_username_from_any_number_of_addresses(login_counts):
    make_user(username="alice")
    anonymous = APIClient()
    codes = [login(anonymous, "Alice" if i % 2 else "alice", "guess",
                   address=f"127.0.3.{i}").status_code
             for i in range(attempts.PER_USERNAME + 1)]  # fmt: skip
    assert codes == [400] * attempts.PER_USERNAME + [429], codes
    assert login(anonymous, "alice", "pw", address="127.0.4.1").status_code == 429
    assert login(anonymous, "bob", "guess", address="127.0.4.1").status_code == 400
    for key in login_counts.scan_iter(f"{attempts.PREFIX}user:*"):
        assert 0 < login_counts.ttl(key) <= attempts.WINDOW  # a window, not forever


def _granted(user, actions, *groups, all_hosts=False):
    grant = Grant.objects.create(actions=actions, all_hosts=all_hosts)
    grant.host_groups.add(*groups)
    grant.users.add(user)
    return grant


def test_moving_hosts_into_a_group_cannot_give_oneself_or_others_more_than_one_holds():
    prod_host, sandbox_host = make_host("10.9.1.1"), make_host("10.9.1.2")
    prod, sandbox = make_group("prod", prod_host), make_group("sandbox", sandbox_host)
    perms = ("hosts.view_host", "hosts.view_hostgroup", "hosts.change_hostgroup_members")
    alice = make_user(*perms, username="alice", everywhere=False)
    bob = make_user(username="bob", everywhere=False)
    _granted(alice, [Action.VIEW], prod)
    _granted(alice, [Action.VIEW, Action.RUN], sandbox)
    _granted(bob, [Action.VIEW, Action.PUSH], sandbox)
    api = token_client(alice)

    answer = api.patch(f"/api/host-groups/{sandbox.pk}/", {"hosts": ["10.9.1.2", "10.9.1.1"]},
                       format="json")  # fmt: skip
    assert answer.status_code == 403, answer.content
    reason = answer.json()["hosts"][0]
    assert "alice may not add 10.9.1.1 to sandbox" in reason and "push, run" in reason
    assert list(sandbox.hosts.values_list("ip", flat=True)) == ["10.9.1.2"]
    refused = [e for e in entries(A.GROUP_CHANGE) if e.outcome == "refused"]
    assert len(refused) == 1 and refused[0].username == "alice"
    assert refused[0].targets_resolved == ["10.9.1.1"] and "10.9.1.1" in str(refused[0].detail)

    # Taking a host out takes the group's grantees' actions away: the same rule.
    both = make_group("both", prod_host)
    _granted(bob, [Action.RUN], both)
    out = api.patch(f"/api/host-groups/{both.pk}/", {"hosts": []}, format="json")
    assert out.status_code == 403 and "may not remove 10.9.1.1 from both" in str(out.json())
    assert both.hosts.count() == 1

    # Holding every action the group's grants give, on the host, is enough.
    _granted(alice, [Action.RUN, Action.PUSH], prod)
    moved = api.patch(f"/api/host-groups/{sandbox.pk}/", {"hosts": ["10.9.1.2", "10.9.1.1"]},
                      format="json")  # fmt: skip
    assert moved.status_code == 200, moved.content
    assert sorted(moved.json()["hosts"]) == ["10.9.1.1", "10.9.1.2"]


def test_a_host_moved_to_another_ip_forgets_its_keys_and_the_move_is_audited(client_with):
    agent = make_host("10.9.2.1")
    ssh = make_host("10.9.2.2")
    Host.objects.filter(pk=ssh.pk).update(mode="ssh", ssh_host_key="ssh-ed25519 AAAAC3Nz test")
    assert Host.objects.get(pk=agent.pk).key_state == "accepted" and agent.agent_key
    api = client_with("hosts.view_host", "hosts.change_host", "hosts.change_host_ip")
    for host, ip in ((agent, "10.9.2.11"), (ssh, "10.9.2.12")):
        moved = api.patch(f"/api/hosts/{host.pk}/", {"ip": ip}, format="json")
        assert moved.status_code == 200, moved.content
        assert moved.json()["key_state"] == "pending" and moved.json()["key_fingerprint"] == ""
        stored = Host.objects.get(pk=host.pk)
        assert (stored.ip, stored.agent_key, stored.candidate_key, stored.ssh_host_key) == (
            ip, "", "", "")  # fmt: skip
        assert not Host.objects.filter(pk=host.pk).accepted().speaking().exists()
    forgotten = entries(A.KEY_DELETE)
    assert [e.targets_resolved for e in forgotten] == [["10.9.2.1", "10.9.2.11"],
                                                       ["10.9.2.2", "10.9.2.12"]]  # fmt: skip
    assert forgotten[0].detail["reason"] == "IP changed" and forgotten[1].detail["ssh_host_key"]
    # Pending with no key: nothing to accept until an agent at the new address registers.
    assert keys.accept(["10.9.2.11"]) == []
    assert Host.objects.get(pk=agent.pk).key_state == "pending"


def test_moving_or_removing_a_host_takes_the_keys_action_on_it_not_only_view():
    host = make_host("10.9.3.1")
    group = make_group("web", host)
    perms = ("hosts.view_host", "hosts.change_host", "hosts.change_host_ip", "hosts.delete_host")
    user = make_user(*perms, username="carol", everywhere=False)
    viewing = _granted(user, [Action.VIEW, Action.RUN], group)
    api = token_client(user)
    renamed = api.patch(f"/api/hosts/{host.pk}/", {"hostname": "web1"}, format="json")
    assert renamed.status_code == 200  # a hostname is no grant's and no queue
    moved = api.patch(f"/api/hosts/{host.pk}/", {"ip": "10.9.3.2"}, format="json")
    assert moved.status_code == 403 and "takes the keys action" in moved.json()["ip"][0]
    removed = api.delete(f"/api/hosts/{host.pk}/")
    assert removed.status_code == 403 and "carol may not remove 10.9.3.1" in str(removed.json())
    stored = Host.objects.get(pk=host.pk)
    assert stored.ip == "10.9.3.1" and stored.key_state == "accepted"
    refused = AuditEntry.objects.filter(outcome="refused").order_by("pk")
    assert [(e.action, e.username) for e in refused] == [(A.HOST_CHANGE, "carol"),
                                                         (A.HOST_REMOVE, "carol")]  # fmt: skip

    viewing.actions = [Action.VIEW, Action.KEYS]
    viewing.save()
    assert api.patch(f"/api/hosts/{host.pk}/", {"ip": "10.9.3.2"},
                     format="json").status_code == 200  # fmt: skip
    assert api.delete(f"/api/hosts/{host.pk}/").status_code == 204


def test_a_job_is_found_by_a_prefix_of_its_id_among_those_one_may_view_only():
    from tests.support.api import make_job

    mine = make_host("10.9.5.1")
    make_host("10.9.5.2")
    make_group("mine", mine)
    seen = make_job("10.9.5.1")
    hidden = make_job("10.9.5.2")
    user = make_user("jobs.view_job", "jobs.view_hosttask", username="dana", everywhere=False)
    _granted(user, [Action.VIEW], HostGroup.objects.get(name="mine"))
    api = token_client(user)
    short = str(seen.pk)[:8]
    answer = api.get(f"/api/jobs/{short}/")
    assert answer.status_code == 200, answer.content
    assert answer.json()["id"] == str(seen.pk)
    assert api.get(f"/api/jobs/{str(hidden.pk)[:8]}/").status_code == 404  # as unknown
    assert api.get("/api/jobs/zzzz/").status_code == 404
    # Two jobs one may view with the same start: a 400 listing both, not a guess.
    twin = make_job("10.9.5.1", id=uuid.UUID(short + uuid.uuid4().hex[8:]))
    assert Job.objects.filter(pk__in=[seen.pk, twin.pk]).count() == 2
    same = api.get(f"/api/jobs/{short}/")
    assert same.status_code == 400 and "is the start of 2 ids" in same.json()["id"][0]
