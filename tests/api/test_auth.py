"""Who may call what: anonymous is 401 everywhere, a user without the permission is 403."""

import pytest
from rest_framework.test import APIClient

from cmdb.jobs.models import Job
from tests.support.api import VIEW_ALL, make_job, make_user, token_client
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db

JOB = "00000000-0000-0000-0000-000000000001"
READ_URLS = [
    "/api/",
    "/api/hosts/",
    "/api/hosts/1/",
    "/api/host-groups/",
    "/api/assets/",
    "/api/changes/",
    "/api/jobs/",
    f"/api/jobs/{JOB}/",
    "/api/host-tasks/",
    "/api/host-tasks/some-task-id/",
    "/api/audit/",
    "/api/audit/1/",
    "/api/schema/",
]
POST_URLS = ["/api/jobs/", f"/api/jobs/{JOB}/cancel/", "/api/host-tasks/some-task-id/cancel/"]


@pytest.mark.parametrize("url", READ_URLS)
def test_anonymous_read_is_401_with_a_token_challenge(url):
    response = APIClient().get(url)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("url", POST_URLS)
def test_anonymous_write_is_401(url):
    response = APIClient().post(url, {"command": "uptime", "hosts": ["127.0.1.1"]}, "json")

    assert response.status_code == 401
    assert not Job.objects.exists()


def test_a_wrong_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert client.get("/api/hosts/").status_code == 401


@pytest.mark.parametrize(
    ("url", "perm"),
    [
        ("/api/hosts/", "hosts.view_host"),
        ("/api/host-groups/", "hosts.view_hostgroup"),
        ("/api/assets/", "assets.view_asset"),
        ("/api/changes/", "assets.view_change"),
        ("/api/jobs/", "jobs.view_job"),
        ("/api/host-tasks/", "jobs.view_hosttask"),
        ("/api/audit/", "audit.view_auditentry"),
    ],
)
def test_each_list_needs_its_view_permission(client_with, url, perm):
    others = [p for p in VIEW_ALL if p != perm]

    assert client_with(*others).get(url).status_code == 403
    assert client_with(perm).get(url).status_code == 200


def test_an_authenticated_user_without_permissions_may_read_the_schema_and_root(client_with):
    client = client_with()

    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/").status_code == 200
    assert client.get("/api/hosts/").status_code == 403


def test_viewing_jobs_does_not_allow_dispatching(client_with):
    make_host("127.0.1.1")
    client = client_with(*VIEW_ALL)

    response = client.post("/api/jobs/", {"command": "uptime", "hosts": ["127.0.1.1"]}, "json")

    assert response.status_code == 403
    assert not Job.objects.exists()


def test_collect_facts_permission_does_not_allow_running_commands(client_with):
    make_host("127.0.1.1")
    client = client_with("jobs.collect_facts")
    body = {"kind": "command", "command": "uptime", "hosts": ["127.0.1.1"]}

    assert client.post("/api/jobs/", body, "json").status_code == 403
    # The default kind is a command.
    del body["kind"]
    assert client.post("/api/jobs/", body, "json").status_code == 403
    assert not Job.objects.exists()


def test_run_command_permission_does_not_allow_collecting(client_with):
    make_host("127.0.1.1")
    client = client_with("jobs.run_command")

    response = client.post("/api/jobs/", {"kind": "collect", "hosts": ["127.0.1.1"]}, "json")

    assert response.status_code == 403


def test_an_unknown_kind_is_a_400_for_whoever_may_dispatch(client_with):
    response = client_with("jobs.collect_facts").post(
        "/api/jobs/", {"kind": "reboot", "hosts": ["127.0.1.1"]}, "json"
    )

    assert response.status_code == 400
    assert "kind" in response.json()
    assert client_with().post("/api/jobs/", {"kind": "reboot"}, "json").status_code == 403


def test_cancel_needs_the_cancel_permission(client_with):
    make_host("127.0.1.1")
    job = make_job("127.0.1.1")
    task = job.host_tasks.get()

    for client in (client_with(*VIEW_ALL), client_with("jobs.run_command")):
        assert client.post(f"/api/jobs/{job.pk}/cancel/").status_code == 403
        assert client.post(f"/api/host-tasks/{task.task_id}/cancel/").status_code == 403
    # Allowed: nothing is left to cancel in a finished job.
    canceller = client_with("jobs.cancel_job")
    response = canceller.post(f"/api/jobs/{job.pk}/cancel/")
    assert (response.status_code, response.json()) == (202, {"cancelled": 0})


def test_session_authentication_works_for_the_browser():
    user = make_user("hosts.view_host")
    client = APIClient()
    client.force_login(user)

    assert client.get("/api/hosts/").status_code == 200


def test_a_superuser_may_do_everything():
    client = token_client(make_user(superuser=True))

    for url in [*READ_URLS[:2], "/api/jobs/", "/api/host-tasks/"]:
        assert client.get(url).status_code == 200, url
