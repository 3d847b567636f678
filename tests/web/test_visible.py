"""The admin, the dashboard and the job page show only what the user may view: a staff user
granted view on the host group web sees web's hosts, records, jobs and counts; db's are not
listed, their pages do not exist, and the admin's actions never reach a db host."""

import re

import pytest
from django.contrib.auth.models import Permission
from django_celery_results.models import TaskResult

from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import HostGroup
from cmdb.jobs.models import Job
from tests.support.api import make_user, web_and_db

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet_of_two(settings, tmp_path):
    settings.CMDB = {**settings.CMDB, "FETCH_DIR": tmp_path}
    return web_and_db(tmp_path)


@pytest.fixture
def staff(client, fleet_of_two):
    """The Django test client, logged in as the user granted view on web, made staff."""
    viewer = fleet_of_two.viewer
    viewer.is_staff = True
    viewer.save()
    client.force_login(viewer)
    return client


def page(client, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


@pytest.mark.parametrize("url", ["/admin/hosts/host/", "/admin/assets/asset/",
                                 "/admin/assets/change/", "/admin/assets/hostfacts/",
                                 "/admin/assets/factreport/"])  # fmt: skip
def test_the_admins_host_lists_show_only_the_web_hosts(fleet_of_two, staff, url):
    text = page(staff, url)

    assert fleet_of_two.web1.ip in text or url.endswith("factreport/")
    assert fleet_of_two.db1.ip not in text and "db-1" not in text and "rocky" not in text


def test_the_admins_job_task_and_result_lists_show_only_the_web_hosts(fleet_of_two, staff):
    f = fleet_of_two
    db_task, web_task = f.task(f.spanning, f.db1), f.task(f.spanning, f.web1)

    jobs = page(staff, "/admin/jobs/job/")
    assert str(f.spanning.pk) in jobs and str(f.fetch.pk) in jobs
    assert str(f.db_only.pk) not in jobs
    tasks = page(staff, "/admin/jobs/hosttask/")
    assert web_task.task_id in tasks and db_task.task_id not in tasks
    assert f.db1.ip not in tasks
    results = page(staff, "/admin/django_celery_results/taskresult/")
    assert web_task.task_id in results and db_task.task_id not in results
    # The server's own task (no host task's) is no host's to hide.
    TaskResult.objects.create(task_id="cmdb-sweep-1", status="SUCCESS")
    assert "cmdb-sweep-1" in page(staff, "/admin/django_celery_results/taskresult/")


def test_a_db_hosts_admin_pages_do_not_exist_for_the_user(fleet_of_two, staff):
    f = fleet_of_two
    db_task = f.task(f.spanning, f.db1)

    for url in (f"/admin/hosts/host/{f.db1.pk}/change/", f"/admin/jobs/job/{f.db_only.pk}/change/",
                f"/admin/jobs/hosttask/{db_task.pk}/change/",
                f"/admin/assets/asset/{f.db1.assets.get().pk}/change/"):  # fmt: skip
        response = staff.get(url)
        assert response.status_code == 302 and response.url == "/admin/", url
    assert f.web1.ip in page(staff, f"/admin/hosts/host/{f.web1.pk}/change/")


def test_a_job_in_the_admin_has_only_the_web_tasks_inline_and_says_one_is_hidden(
    fleet_of_two, staff
):
    f = fleet_of_two

    text = page(staff, f"/admin/jobs/job/{f.spanning.pk}/change/")

    assert f.web1.ip in text and f.web2.ip in text and f.db1.ip not in text
    assert re.search(r"Hosts not shown:</label>\s*<div class=\"readonly\">1<", text)


def test_host_groups_show_only_the_members_one_may_view(fleet_of_two, staff):
    f = fleet_of_two

    assert f.db1.ip not in page(staff, f"/admin/hosts/hostgroup/{f.db1.groups.get().pk}/change/")
    web = page(staff, f"/admin/hosts/hostgroup/{f.web1.groups.get().pk}/change/")
    assert f.web1.ip in web and f.web2.ip in web


def test_saving_a_group_keeps_the_members_one_may_not_view(fleet_of_two, staff):
    f = fleet_of_two
    for codename in ("change_hostgroup", "change_hostgroup_members"):
        f.viewer.user_permissions.add(Permission.objects.get(codename=codename))
    db = HostGroup.objects.get(name="db")
    form = page(staff, f"/admin/hosts/hostgroup/{db.pk}/change/")
    assert f.web1.ip in form and f.db1.ip not in form  # the choices: web's hosts only
    before = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0

    edited = {"name": "db", "description": "databases", "hosts": [f.web1.pk]}
    response = staff.post(f"/admin/hosts/hostgroup/{db.pk}/change/", edited)

    assert response.status_code == 302, response.content.decode()
    assert set(db.hosts.values_list("ip", flat=True)) == {f.web1.ip, f.db1.ip}
    changes = AuditEntry.objects.filter(action="group.change", seq__gt=before)
    assert [e.targets_resolved for e in changes] == [[f.web1.ip]]


def test_the_admins_host_actions_see_only_viewable_hosts(fleet_of_two, staff):
    f = fleet_of_two
    f.viewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["run_command", "collect_facts"])
    )

    selected = {"action": "run_command", "_selected_action": [f.web1.pk, f.db1.pk]}
    form = staff.post("/admin/hosts/host/", selected)
    assert form.status_code == 200
    text = form.content.decode()
    assert f.web1.ip in text and f.db1.ip not in text
    staff.post("/admin/hosts/host/", {"action": "collect_facts", "_selected_action": [f.db1.pk]})
    assert not Job.objects.filter(kind="collect").exists()


# --- the dashboard and the job page --------------------------------------------------------------
def test_the_dashboard_counts_only_the_hosts_one_may_view(fleet_of_two, staff):
    f = fleet_of_two

    text = page(staff, "/dashboard/")

    assert re.search(r'id="host-count">2 hosts', text)
    assert "debian 12" in text and "rocky" not in text
    assert f.web1.ip in text and f.db1.ip not in text  # the fullest disks: web's only
    assert f"/jobs/{f.spanning.pk}/" in text and f"/jobs/{f.db_only.pk}/" not in text
    assert "<td>2/2</td>" in text and "<td>1/1</td>" in text and "3/3" not in text


def test_a_superuser_dashboard_counts_every_host(fleet_of_two, client):
    client.force_login(make_user(superuser=True))

    text = page(client, "/dashboard/")

    assert re.search(r'id="host-count">3 hosts', text)
    assert "rocky 9" in text and fleet_of_two.db1.ip in text and "<td>3/3</td>" in text


def test_the_job_page_shows_the_web_hosts_and_says_one_is_hidden(fleet_of_two, staff):
    f = fleet_of_two

    text = page(staff, f"/jobs/{f.spanning.pk}/")

    assert f'data-host="{f.web1.ip}"' in text and f'data-host="{f.web2.ip}"' in text
    assert f.db1.ip not in text
    assert "1 more host not shown: you may not view it." in text
    page(staff, f"/jobs/{f.db_only.pk}/", 404)


def test_the_job_pages_download_links_are_the_web_hosts_and_audited(fleet_of_two, staff):
    f = fleet_of_two
    web, db = f.task(f.fetch, f.web1), f.task(f.fetch, f.db1)

    text = page(staff, f"/jobs/{f.fetch.pk}/")
    links = re.findall(r'href="(/api/host-tasks/[^"]+/file/)"', text)

    assert links == [f"/api/host-tasks/{web.task_id}/file/"]
    answer = staff.get(links[0])  # with the page's session, as a browser follows it
    assert answer.status_code == 200
    assert b"".join(answer.streaming_content) == f"log of {f.web1.ip}\n".encode()
    assert staff.get(f"/api/host-tasks/{db.task_id}/file/").status_code == 404
    entry = AuditEntry.objects.get(action="download")
    assert (entry.username, entry.targets_resolved, entry.job_id) == (
        "webviewer", [f.web1.ip], f.fetch.pk)  # fmt: skip
    tar = re.search(r'id="job-files" href="([^"]+)"', text).group(1)
    assert staff.get(tar).status_code == 200
    assert AuditEntry.objects.filter(action="download").count() == 2
