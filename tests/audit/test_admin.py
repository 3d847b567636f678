"""The admin shows the trail, filtered and searched, and offers no way to change it: not to a
superuser either."""

import pytest

from cmdb import audit
from cmdb.access.actor import Actor
from cmdb.audit.models import AuditEntry
from tests.support.api import make_user

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/audit/auditentry/"


@pytest.fixture
def entries():
    alice = make_user(username="alice")
    return [
        audit.record(Actor(alice, "admin", "192.0.2.1"), "dispatch", kind="command",
                     command="systemctl restart nginx", targets_resolved=["10.0.0.1"]),
        audit.record(None, "refused", command="reboot", targets_resolved=["10.0.0.2"]),
    ]  # fmt: skip


@pytest.fixture
def root(client):
    client.force_login(make_user(superuser=True, username="root"))
    return client


def test_the_list_shows_targets_and_filters_and_searches(root, entries):
    page = root.get(CHANGELIST)
    assert page.status_code == 200
    assert b"systemctl restart nginx" in page.content and b"10.0.0.1" in page.content

    refused = root.get(CHANGELIST, {"action__exact": "refused"}).content.decode()
    assert "reboot" in refused and "nginx" not in refused
    by_user = root.get(CHANGELIST, {"username": "alice"}).content.decode()
    assert "nginx" in by_user and "reboot" not in by_user
    searched = root.get(CHANGELIST, {"q": "nginx"}).content.decode()
    assert "nginx" in searched and "reboot" not in searched
    by_host = root.get(CHANGELIST, {"q": "10.0.0.2"}).content.decode()
    assert "reboot" in by_host and "nginx" not in by_host
    year = entries[0].at.year
    assert root.get(CHANGELIST, {"at__year": year}).status_code == 200


def test_a_superuser_can_neither_add_change_nor_delete(root, entries):
    entry = entries[0]
    item = f"{CHANGELIST}{entry.pk}/"

    assert root.get(f"{CHANGELIST}add/").status_code == 403
    detail = root.get(f"{item}change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert root.post(f"{item}change/", {"command": "ls"}).status_code == 403
    assert root.get(f"{item}delete/").status_code == 403
    assert root.post(f"{item}delete/", {"post": "yes"}).status_code == 403
    listing = root.get(CHANGELIST)
    assert b"delete_selected" not in listing.content
    bulk = root.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [entry.pk],
                                  "post": "yes"})  # fmt: skip
    assert bulk.status_code in (200, 302)
    assert AuditEntry.objects.get(pk=entry.pk).command == "systemctl restart nginx"


def test_staff_without_the_permission_cannot_read_it(client, entries):
    staff = make_user(username="staff")
    staff.is_staff = True
    staff.save()
    client.force_login(staff)

    assert client.get(CHANGELIST).status_code == 403
    assert client.get(f"{CHANGELIST}{entries[0].pk}/change/").status_code == 403
