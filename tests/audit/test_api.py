"""GET /api/audit/: for holders of audit.view_auditentry only, filtered, paginated, and never
writable (405 to those who may read it, 403 to the others)."""

import json
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from cmdb import audit
from cmdb.access.actor import Actor
from cmdb.audit.models import AuditEntry
from tests.audit.helpers import entry_at
from tests.support.api import make_user, token_client

pytestmark = pytest.mark.django_db

VIEW = "audit.view_auditentry"
JOB = uuid.uuid4()
#: What the fixtures' users and tokens record themselves.
SETUP = ("user.access", "token.add")


@pytest.fixture
def trail():
    alice, bob = make_user(username="alice"), make_user(username="bob")
    old = entry_at(
        timezone.now() - timedelta(days=10), username="carol", via="schedule", command="old news"
    )
    return [
        old,
        audit.record(Actor(alice, "api", "192.0.2.1"), "dispatch", kind="command",
                     command="systemctl restart nginx", targets_given=["web"],
                     targets_resolved=["10.0.0.1", "10.0.0.2"], job=JOB),
        audit.record(Actor(bob, "cli"), "refused", kind="command", command="reboot",
                     targets_resolved=["10.0.0.10"], detail={"reason": "outside grants"}),
        audit.record(Actor(alice, "web"), "cancel", job=JOB),
    ]  # fmt: skip


@pytest.fixture
def auditor():
    return token_client(make_user(VIEW, username="auditor"))


def seqs(response) -> list[int]:
    """The entries' seqs, but for the fixtures' own (users' permissions, tokens)."""
    assert response.status_code == 200, response.content
    return [e["seq"] for e in response.json()["results"] if e["action"] not in SETUP]


def test_an_auditor_reads_the_trail_newest_first_paginated(auditor, trail):
    page = auditor.get("/api/audit/", {"limit": 2})

    body = page.json()
    assert body["count"] == 4 + AuditEntry.objects.filter(action__in=SETUP).count()
    assert [e["seq"] for e in body["results"]] == [trail[3].seq, trail[2].seq]
    assert "offset=2" in body["next"]
    assert seqs(auditor.get(body["next"])) == [trail[1].seq, trail[0].seq]
    one = auditor.get(f"/api/audit/{trail[1].pk}/").json()
    assert one["command"] == "systemctl restart nginx"
    assert one["targets_resolved"] == ["10.0.0.1", "10.0.0.2"]
    assert (one["username"], one["via"], one["address"]) == ("alice", "api", "192.0.2.1")
    assert one["job_id"] == str(JOB) and one["hash"] == trail[1].hash


@pytest.mark.parametrize(("params", "expected"), [
    ({"username": "alice"}, [3, 1]),
    ({"action": "refused"}, [2]),
    ({"via": "cli"}, [2]),
    ({"outcome": "refused"}, [2]),
    ({"host": "10.0.0.1"}, [1]),  # not 10.0.0.10
    ({"host": "10.0.0.10"}, [2]),
    ({"job": str(JOB)}, [3, 1]),
    ({"search": "NGINX"}, [1]),
    ({"since": "1d"}, [3, 2, 1]),
    ({"until": "1d"}, [0]),
])  # fmt: skip
def test_the_filters(auditor, trail, params, expected):
    assert seqs(auditor.get("/api/audit/", params)) == [trail[i].seq for i in expected]


@pytest.mark.parametrize("params", [{"host": "10.0.0"}, {"since": "yesterday"},
                                    {"action": "delete"}, {"search": "a\x00b"}])  # fmt: skip
def test_a_bad_filter_is_a_400(auditor, trail, params):
    assert auditor.get("/api/audit/", params).status_code == 400


def test_without_the_permission_it_is_403_and_anonymous_401(trail):
    operator = token_client(make_user("jobs.view_job", "hosts.view_host"))

    assert operator.get("/api/audit/").status_code == 403
    assert operator.get(f"/api/audit/{trail[0].pk}/").status_code == 403
    assert operator.post("/api/audit/", {}, format="json").status_code == 403
    assert APIClient().get("/api/audit/").status_code == 401


@pytest.mark.parametrize("superuser", [False, True])
def test_nobody_writes_through_the_api(auditor, trail, superuser):
    client = token_client(make_user(superuser=True)) if superuser else auditor
    item = f"/api/audit/{trail[1].pk}/"

    assert client.post("/api/audit/", {"command": "x"}, format="json").status_code == 405
    assert client.put(item, {"command": "x"}, format="json").status_code == 405
    assert client.patch(item, {"command": "x"}, format="json").status_code == 405
    assert client.delete(item).status_code == 405
    assert client.get(item).json()["command"] == "systemctl restart nginx"


def test_export_writes_json_lines_oldest_first_within_since_and_until(trail, capsys):
    call_command("audit", "export")
    everything = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    call_command("audit", "export", "--since", "1d")
    recent = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    until = (timezone.now() - timedelta(days=1)).isoformat()
    call_command("audit", "export", "--until", until)
    old = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert [e["seq"] for e in everything] == [e.seq for e in trail]
    assert [e["seq"] for e in recent] == [e.seq for e in trail[1:]]
    assert [e["command"] for e in old] == ["old news"]
    line = everything[1]
    assert line["job_id"] == str(JOB) and line["targets_resolved"] == ["10.0.0.1", "10.0.0.2"]
    assert set(line) >= {"at", "username", "via", "address", "action", "outcome", "kind",
                         "command", "targets_given", "detail", "prev_hash", "hash"}  # fmt: skip
