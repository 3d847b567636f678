"""Lists and details show only what the user may view (cmdb.access.visible): a user granted
view on the host group web sees web's hosts, assets, changes, host tasks and jobs through the
API; db's are 404; a job on both shows web's tasks and says how many are hidden; fetched files
are web's only, and each download is in the audit trail."""

import io
import json
import tarfile

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cmdb.access import visible
from cmdb.audit.models import AuditEntry
from cmdb.jobs import services
from cmdb.jobs.exceptions import NotFound
from cmdb.jobs.models import HostTask, Job
from tests.support.api import (
    VIEW_ALL,
    make_job,
    make_user,
    token_client,
    web_and_db,
    without_host,
)
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet_of_two(settings, tmp_path):
    settings.CMDB = {**settings.CMDB, "FETCH_DIR": tmp_path}
    return web_and_db(tmp_path)


@pytest.fixture
def api(fleet_of_two):
    return token_client(fleet_of_two.viewer)


def listed(client, url: str, key: str = "ip") -> list:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return [row[key] for row in response.json()["results"]]


def host_ips(client, url: str) -> list[str]:
    return sorted(row["host"]["ip"] for row in client.get(url).json()["results"])


def test_hosts_assets_and_changes_are_only_those_of_hosts_the_user_may_view(fleet_of_two, api):
    f = fleet_of_two
    web = [f.web1.ip, f.web2.ip]

    assert listed(api, "/api/hosts/") == web
    assert listed(api, "/api/hosts/?where=os=rocky") == []
    assert host_ips(api, "/api/assets/") == web
    assert host_ips(api, "/api/changes/") == web
    assert api.get(f"/api/hosts/{f.web1.pk}/").status_code == 200
    # db's are as if they did not exist: 404, not 403.
    assert api.get(f"/api/hosts/{f.db1.pk}/").status_code == 404
    assert api.get(f"/api/assets/{f.db1.assets.get().pk}/").status_code == 404
    assert api.get(f"/api/changes/{f.db1.changes.get().pk}/").status_code == 404


def test_acting_on_a_host_or_task_one_may_not_view_is_404(fleet_of_two):
    f = fleet_of_two
    may_act = Permission.objects.filter(codename__in=["manage_keys", "cancel_job"])
    f.viewer.user_permissions.add(*may_act)
    api = token_client(f.viewer)
    db_task = f.task(f.spanning, f.db1)

    assert api.post(f"/api/hosts/{f.db1.pk}/reject-key/").status_code == 404
    assert api.post(f"/api/host-tasks/{db_task.task_id}/cancel/").status_code == 404
    assert api.post(f"/api/jobs/{f.db_only.pk}/cancel/").status_code == 404


def test_host_groups_are_all_listed_with_only_the_members_one_may_view(fleet_of_two, api):
    groups = {g["name"]: g["hosts"] for g in api.get("/api/host-groups/").json()["results"]}

    assert groups == {"db": [], "web": [fleet_of_two.web1.ip, fleet_of_two.web2.ip]}


def test_host_tasks_are_only_those_of_hosts_the_user_may_view(fleet_of_two, api):
    f = fleet_of_two
    db_task = f.task(f.spanning, f.db1)

    assert set(listed(api, "/api/host-tasks/?limit=100", "host")) == {f.web1.ip, f.web2.ip}
    assert listed(api, f"/api/host-tasks/?host={f.db1.ip}", "host") == []
    assert api.get(f"/api/host-tasks/{f.task(f.spanning, f.web1).task_id}/").status_code == 200
    assert api.get(f"/api/host-tasks/{db_task.task_id}/").status_code == 404


def test_a_job_on_both_groups_shows_the_web_tasks_and_says_how_many_are_hidden(fleet_of_two, api):
    f = fleet_of_two

    body = api.get(f"/api/jobs/{f.spanning.pk}/").json()

    assert [t["host"] for t in body["tasks"]] == [f.web1.ip, f.web2.ip]
    assert (body["summary"], body["hidden_hosts"], body["done"]) == ({"ok": 2}, 1, True)
    assert set(listed(api, "/api/jobs/", "id")) == {str(f.spanning.pk), str(f.fetch.pk)}
    assert api.get(f"/api/jobs/{f.db_only.pk}/").status_code == 404
    rows = {row["id"]: row for row in api.get("/api/jobs/").json()["results"]}
    assert rows[str(f.fetch.pk)]["hidden_hosts"] == 1
    assert [t["host"] for t in rows[str(f.fetch.pk)]["tasks"]] == [f.web1.ip]


def test_a_job_the_user_asked_for_is_theirs_to_view_even_with_no_host_they_may(fleet_of_two, api):
    f = fleet_of_two
    refused = Job.objects.create(command="echo refused", timeout=5, reach_timeout=5,
                                 requested_by="webviewer", dispatch_error="refused")  # fmt: skip
    on_db = make_job(f.db1.ip, requested_by="webviewer")

    assert api.get(f"/api/jobs/{refused.pk}/").json()["tasks"] == []
    body = api.get(f"/api/jobs/{on_db.pk}/").json()
    assert (body["tasks"], body["hidden_hosts"], body["summary"]) == ([], 1, {})


def test_a_superuser_sees_every_host_and_every_task_with_none_hidden(fleet_of_two):
    f = fleet_of_two
    root = token_client(make_user(superuser=True))

    assert listed(root, "/api/hosts/") == [f.web1.ip, f.web2.ip, f.db1.ip]
    body = root.get(f"/api/jobs/{f.spanning.pk}/").json()
    assert (len(body["tasks"]), body["hidden_hosts"]) == (3, 0)
    assert root.get(f"/api/jobs/{f.db_only.pk}/").status_code == 200


def test_a_user_with_no_view_grant_sees_nothing(fleet_of_two):
    nobody = token_client(make_user(*VIEW_ALL, everywhere=False))

    assert listed(nobody, "/api/hosts/") == []
    assert listed(nobody, "/api/jobs/", "id") == []
    assert nobody.get(f"/api/hosts/{fleet_of_two.web1.pk}/").status_code == 404


# --- fetched files --------------------------------------------------------------------------------
def downloads():
    return list(AuditEntry.objects.filter(action="download").order_by("seq"))


def test_a_web_hosts_file_downloads_and_is_audited_a_db_hosts_is_404(fleet_of_two, api):
    f = fleet_of_two
    web, db = f.task(f.fetch, f.web1), f.task(f.fetch, f.db1)

    answer = api.get(f"/api/host-tasks/{web.task_id}/file/")
    assert answer.status_code == 200
    assert b"".join(answer.streaming_content) == f"log of {f.web1.ip}\n".encode()
    assert api.get(f"/api/host-tasks/{db.task_id}/file/").status_code == 404

    (entry,) = downloads()
    assert (entry.username, entry.via, entry.outcome) == ("webviewer", "api", "ok")
    assert (entry.targets_resolved, entry.job_id, entry.kind) == ([f.web1.ip], f.fetch.pk, "fetch")
    assert entry.detail == {"path": "/var/log/app.log", "archive": False,
                            "tasks": [web.task_id], "sha256": [web.fetched["sha256"]]}  # fmt: skip


def test_the_tar_of_a_jobs_files_holds_the_web_hosts_only(fleet_of_two, api):
    f = fleet_of_two
    web = f.task(f.fetch, f.web1)

    answer = api.get(f"/api/jobs/{f.fetch.pk}/files/", HTTP_ACCEPT="application/x-tar")

    assert answer.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(b"".join(answer.streaming_content))) as tar:
        assert tar.getnames() == [f"{f.web1.ip}/app.log", "SHA256SUMS"]
    (entry,) = downloads()
    assert (entry.targets_resolved, entry.detail["archive"]) == ([f.web1.ip], True)
    assert entry.detail["tasks"] == [web.task_id]
    # A fetch on db alone has nothing for this user: 404, and no entry.
    HostTask.objects.filter(pk=web.pk).update(host=f.db1)
    assert api.get(f"/api/jobs/{f.fetch.pk}/files/").status_code == 404
    assert len(downloads()) == 1


def test_a_download_needs_view_output_as_well_as_the_view_grant(fleet_of_two):
    f = fleet_of_two
    f.viewer.user_permissions.remove(*f.viewer.user_permissions.filter(codename="view_output"))
    api = token_client(f.viewer)

    assert api.get(f"/api/host-tasks/{f.task(f.fetch, f.web1).task_id}/file/").status_code == 403
    assert api.get(f"/api/jobs/{f.fetch.pk}/files/").status_code == 403
    assert downloads() == []


# --- the helpers themselves ----------------------------------------------------------------------
def test_a_superusers_querysets_have_no_filter_added(fleet_of_two):
    root = make_user(superuser=True)

    assert "WHERE" not in str(visible.viewable_hosts(root).query)
    assert "WHERE" not in str(visible.viewable_jobs(root).query)
    assert "WHERE" in str(visible.viewable_hosts(fleet_of_two.viewer).query)


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("url", ["/api/jobs/", "/api/host-tasks/", "/api/hosts/"])
def test_a_narrowed_list_costs_the_same_queries_for_few_rows_or_many(fleet_of_two, api, url):
    f = fleet_of_two
    few = queries(api, url)
    for i in range(20):
        host = make_host(f"127.16.0.{10 + i}")
        host.groups.add(*f.web1.groups.all())
        make_job(host.ip, f.db1.ip)

    assert len(api.get(url).json()["results"]) >= 20
    assert queries(api, url) == few


# --- the command line (check_task), for when it has a user ----------------------------------------
def test_find_with_a_user_gives_their_hosts_tasks_and_counts_the_others(fleet_of_two):
    f = fleet_of_two

    found = services.find(str(f.spanning.pk), f.viewer)
    assert ([t.ip for t in found.tasks], found.hidden) == ([f.web1.ip, f.web2.ip], 1)
    assert len(services.find(str(f.spanning.pk)).tasks) == 3  # no user: everything
    for ident in (str(f.db_only.pk), f.task(f.spanning, f.db1).task_id):
        with pytest.raises(NotFound, match="no job or host task has the id"):
            services.find(ident, f.viewer)
    web = services.find(f.task(f.spanning, f.web1).task_id, f.viewer)
    assert ([t.ip for t in web.tasks], web.hidden) == ([f.web1.ip], 0)


@pytest.fixture
def as_viewer(fleet_of_two, monkeypatch):
    """check_task as the user granted view on web (CMDB_USER)."""
    from django.conf import settings

    monkeypatch.setitem(settings.CMDB, "CLI_USER", fleet_of_two.viewer.get_username())


def check_task_out(*args: str) -> str:
    out = io.StringIO()
    call_command("check_task", *args, stdout=out)  # every host shown is ok: exit 0
    return out.getvalue()


def test_check_task_for_a_user_shows_what_the_api_shows_them(fleet_of_two, api, as_viewer):
    f = fleet_of_two

    printed = json.loads(check_task_out(str(f.spanning.pk), "--json"))

    assert printed == without_host(api.get(f"/api/jobs/{f.spanning.pk}/").json())
    assert printed["hidden_hosts"] == 1
    text = check_task_out(str(f.spanning.pk))
    assert "[not shown] 1 more host(s): you may not view them" in text
    assert f.db1.ip not in text and "out of <host>" in text  # grouped: the same but the address
    text = check_task_out(str(f.spanning.pk), "--no-group")
    assert f.db1.ip not in text and f"out of {f.web1.ip}" in text
    with pytest.raises(CommandError, match="no job or host task has the id"):
        call_command("check_task", str(f.db_only.pk))


def test_check_task_shows_no_output_to_a_user_without_view_output(fleet_of_two, as_viewer):
    f = fleet_of_two
    f.viewer.user_permissions.remove(*f.viewer.user_permissions.filter(codename="view_output"))

    text = check_task_out(str(f.spanning.pk))

    assert f"out of {f.web1.ip}" not in text and "[output not shown" in text
    f.viewer.user_permissions.remove(*f.viewer.user_permissions.filter(codename="view_job"))
    f.viewer = type(f.viewer).objects.get(pk=f.viewer.pk)  # permissions are cached per object
    with pytest.raises(CommandError, match="may not view jobs"):
        call_command("check_task", str(f.spanning.pk))
