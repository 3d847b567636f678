"""A job of more hosts than a page holds: the job page and the admin's show the first ones,
by IP, with the counts of every one, and lead to the rest."""

import pytest

from cmdb.jobs import admin as jobs_admin
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.web import jobpage
from tests.support.api import make_job, make_user
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db
IPS = [f"10.0.7.{i}" for i in (5, 1, 4, 2, 3)]


@pytest.fixture
def job():
    for ip in IPS:
        make_host(ip)
    job = make_job(*IPS)
    job.host_tasks.filter(ip="10.0.7.5").update(state=State.FAILED)
    return job


@pytest.fixture
def admin(client):
    client.force_login(make_user(superuser=True))
    return client


def hosts_on(text: str) -> list[str]:
    return [ip for ip in sorted(IPS) if f'data-host="{ip}"' in text]


def test_the_job_page_shows_a_page_of_hosts_and_counts_them_all(admin, job, monkeypatch):
    monkeypatch.setattr(jobpage, "HOSTS_PER_PAGE", 2)

    first = admin.get(f"/jobs/{job.pk}/").content.decode()
    last = admin.get(f"/jobs/{job.pk}/?page=3").content.decode()

    assert hosts_on(first) == ["10.0.7.1", "10.0.7.2"]
    assert "on 5 hosts: 4 ok, 1 failed." in first and 'data-done="true"' in first
    assert "Hosts 1&ndash;2 of 5, by IP (page 1 of 3)" in first
    assert '<a href="?page=2">next</a>' in first
    assert hosts_on(last) == ["10.0.7.5"] and '<a href="?page=2">previous</a>' in last
    # A page past the end is the last one, as a typo should not be an error page.
    assert hosts_on(admin.get(f"/jobs/{job.pk}/?page=9").content.decode()) == ["10.0.7.5"]


def test_a_job_that_fits_on_one_page_has_no_page_links(admin, job):
    text = admin.get(f"/jobs/{job.pk}/").content.decode()

    assert hosts_on(text) == sorted(IPS) and 'id="job-pages"' not in text


def test_the_admins_job_page_has_the_first_host_tasks_inline_and_links_to_all(
    admin, job, monkeypatch
):
    monkeypatch.setattr(jobs_admin, "INLINE_TASKS", 2)

    text = admin.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()

    assert "10.0.7.1" in text and "10.0.7.2" in text and "10.0.7.3" not in text
    assert f'the first 2 by IP below, <a href="/admin/jobs/hosttask/?job={job.pk}">' in text
    listed = admin.get(f"/admin/jobs/hosttask/?job={job.pk}")
    assert listed.status_code == 200
    assert all(ip in listed.content.decode() for ip in IPS)
