"""Seeing that a job ran where is not reading what the hosts said: their output and the files
fetched from them take jobs.view_output, in the API and on the job page."""

import pytest
from django.contrib.auth.models import Permission, User

from cmdb.access.models import Action, Grant
from cmdb.jobs.models import HostTask
from tests.support.api import make_job, make_user, token_client
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db
IP = "127.0.1.9"


@pytest.fixture
def fetched(settings, tmp_path):
    """A fetch job whose copy of a host's /etc/shadow is kept on the server."""
    settings.CMDB = {**settings.CMDB, "FETCH_DIR": tmp_path}
    make_host(IP)
    job = make_job(IP, kind="fetch", command="fetch")
    copy = tmp_path / str(job.pk) / IP / "shadow"
    copy.parent.mkdir(parents=True)
    copy.write_text("root:$6$secret:19000:0:99999:7:::\n")
    task = job.host_tasks.get()
    task.fetched = {"path": str(copy), "sha256": "a" * 64, "size": copy.stat().st_size}
    task.save()
    return task


def test_view_hosttask_alone_does_not_download_a_fetched_file(fetched):
    viewer = token_client(make_user("jobs.view_hosttask", "jobs.view_job"))

    assert viewer.get(f"/api/host-tasks/{fetched.task_id}/file/").status_code == 403
    assert viewer.get(f"/api/jobs/{fetched.job_id}/files/").status_code == 403
    reader = token_client(make_user("jobs.view_hosttask", "jobs.view_job", "jobs.view_output"))
    answer = reader.get(f"/api/host-tasks/{fetched.task_id}/file/")
    assert answer.status_code == 200 and b"$6$secret" in b"".join(answer.streaming_content)


def test_view_job_alone_shows_no_hosts_output():
    make_host(IP)
    job = make_job(IP)

    seen = token_client(make_user("jobs.view_job")).get(f"/api/jobs/{job.pk}/").json()
    task = (
        token_client(make_user("jobs.view_hosttask"))
        .get(f"/api/host-tasks/{job.host_tasks.get().task_id}/")
        .json()
    )
    read = (
        token_client(make_user("jobs.view_job", "jobs.view_output"))
        .get(f"/api/jobs/{job.pk}/")
        .json()
    )

    assert [(t["stdout"], t["stderr"]) for t in seen["tasks"]] == [(None, None)]
    assert (task["stdout"], task["stderr"]) == (None, None)
    assert read["tasks"][0]["stdout"]["head"] == f"out of {IP}\n"
    assert seen["tasks"][0]["state"] == read["tasks"][0]["state"]  # the record itself is there


def test_the_job_page_shows_output_only_to_who_may_read_it(client):
    make_host(IP)
    job = make_job(IP)
    staff = User.objects.create_user("watcher", password="x", is_staff=True)
    Grant.objects.create(actions=[Action.VIEW], all_hosts=True).users.add(staff)  # every host
    staff.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(staff)

    hidden = client.get(f"/jobs/{job.pk}/").content.decode()
    staff.user_permissions.add(Permission.objects.get(codename="view_output"))
    shown = client.get(f"/jobs/{job.pk}/").content.decode()

    assert f"out of {IP}" not in hidden and "Output not shown" in hidden
    assert f"out of {IP}" in shown
    assert HostTask.objects.filter(job=job).count() == 1


def test_the_admin_shows_no_output_without_the_permission_and_filters_on_none(client):
    from django_celery_results.models import TaskResult

    make_host(IP)
    job = make_job(IP)
    task = job.host_tasks.get()
    TaskResult.objects.filter(task_id=task.task_id).update(result='{"stdout": "SECRET-OUT"}')
    HostTask.objects.filter(pk=task.pk).update(stdout_head="SECRET-OUT\n")
    staff = User.objects.create_user("watcher", password="x", is_staff=True)
    Grant.objects.create(actions=[Action.VIEW], all_hosts=True).users.add(staff)  # every host
    for codename in ("view_job", "view_hosttask", "view_taskresult"):
        staff.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(staff)
    pages = [f"/admin/jobs/job/{job.pk}/change/", f"/admin/jobs/hosttask/{task.pk}/change/",
             f"/admin/django_celery_results/taskresult/"
             f"{TaskResult.objects.get(task_id=task.task_id).pk}/change/"]  # fmt: skip

    for page in pages:
        answer = client.get(page)
        assert answer.status_code == 200 and "SECRET-OUT" not in answer.content.decode(), page
    # Filtering on output would answer yes or no about it: refused (400, SuspiciousOperation).
    client.raise_request_exception = False
    for lookup in ("stdout_head__startswith", "error__contains"):
        assert client.get("/admin/jobs/hosttask/", {lookup: "SECRET"}).status_code == 400
    client.raise_request_exception = True

    staff.user_permissions.add(Permission.objects.get(codename="view_output"))
    staff = User.objects.get(pk=staff.pk)  # permissions are cached per user object
    client.force_login(staff)
    assert all("SECRET-OUT" in client.get(page).content.decode() for page in pages)
