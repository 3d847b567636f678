"""The web console's pages through Django's test client: the fleet (numeric order, filters,
pages), a host (readable facts, assets, history, jobs), the run page's count, the job page
(state table, groups, filters, export, cancel and re-run), the dashboard against `facts`."""

import io
import re
from csv import reader as csv_rows

import pytest
from django.core.management import call_command
from django.test import Client

from cmdb.access.models import Action, Grant
from cmdb.assets.models import Asset
from cmdb.hosts.models import HostGroup
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import Job
from cmdb.web import fleet as fleet_view
from tests.support.api import make_change, make_facts, make_group, make_job, make_user
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db
IPS = ["127.0.2.1", "127.0.2.2", "127.0.2.10", "127.0.2.100", "127.0.2.11"]
NUMERIC = ["127.0.2.1", "127.0.2.2", "127.0.2.10", "127.0.2.11", "127.0.2.100"]
VIEWER = ["hosts.view_host", "hosts.view_hostgroup", "assets.view_asset", "assets.view_change",
          "jobs.view_job", "jobs.view_hosttask", "jobs.view_output"]  # fmt: skip


@pytest.fixture
def hosts():
    made = {ip: make_host(ip, hostname=f"node-{ip.rsplit('.', 1)[1]}") for ip in IPS}
    for n, host in enumerate(made.values()):
        make_facts(host, memory_bytes=(16 << n) * 2**30, disk_free_pct=40.0 - n)
        Asset.objects.create(
            host=host,
            kind="mount",
            key="/",
            data={"fstype": "ext4", "size_bytes": 274877906944},
            metrics={"used_pct": 50.0 + n},
        )
    make_group("web", made["127.0.2.2"], made["127.0.2.100"])
    return made


@pytest.fixture
def admin(client):
    client.force_login(make_user(superuser=True))
    return client


def ips_in(text: str, attr: str = "data-ip") -> list[str]:
    return re.findall(rf'{attr}="([\d.]+)"', text)


def test_the_fleet_page_lists_hosts_in_numeric_order_with_their_facts(admin, hosts):
    text = admin.get("/fleet/").content.decode()

    assert ips_in(text) == NUMERIC
    assert "5 hosts, by IP." in text
    assert "debian 12" in text and "16.0 GiB" in text and "256.0 GiB" in text
    assert "/ 54.0% used" in text  # the fullest mount, as `facts` says it


def test_the_fleet_page_filters_by_group_and_by_fact_expression(admin, hosts):
    assert ips_in(admin.get("/fleet/?group=web").content.decode()) == ["127.0.2.2", "127.0.2.100"]
    text = admin.get("/fleet/", {"where": "memory_gb>=64\nip~127.0.2.1"}).content.decode()
    assert ips_in(text) == ["127.0.2.10", "127.0.2.11", "127.0.2.100"]
    # The same targets, one click away from a command.
    run = re.search(r'id="fleet-run" href="([^"]+)"', text).group(1).replace("&amp;", "&")
    form = admin.get(run).content.decode()
    assert "memory_gb&gt;=64\nip~127.0.2.1</textarea>" in form
    wrong = admin.get("/fleet/", {"where": "colour=blue"}).content.decode()
    assert "unknown field &#x27;colour&#x27;" in wrong


def test_the_fleet_page_is_paginated(admin, hosts, monkeypatch):
    monkeypatch.setattr(fleet_view, "FLEET_PAGE", 2)

    text = admin.get("/fleet/?page=3").content.decode()

    assert ips_in(text) == ["127.0.2.100"] and "(page 3 of 3)" in text


def test_the_fleet_shows_only_the_hosts_a_grant_covers(client, hosts):
    user = make_user(*VIEWER, everywhere=False)
    user.is_staff = True
    user.save()
    grant = Grant.objects.create(actions=[Action.VIEW])
    grant.host_groups.add(HostGroup.objects.get(name="web"))
    grant.users.add(user)
    client.force_login(user)

    assert ips_in(client.get("/fleet/").content.decode()) == ["127.0.2.2", "127.0.2.100"]
    assert client.get(f"/hosts/{hosts['127.0.2.1'].pk}/").status_code == 404
    assert client.get(f"/hosts/{hosts['127.0.2.2'].pk}/").status_code == 200
    count = client.get("/run/count/", {"where": "os=debian"}).content.decode()
    assert 'data-count="2"' in count


def test_the_host_page_is_readable_not_json(admin, hosts):
    host = hosts["127.0.2.1"]
    Asset.objects.create(host=host, kind="system", key="", data={"os_id": "debian",
                         "boot_time": 1796150930, "kernel": "6.1.0"})  # fmt: skip
    make_change(host, action="changed", kind="memory", key="", field="total_bytes",
                old=16 * 2**30, new=32 * 2**30)  # fmt: skip
    job = make_job(host.ip, command="uptime")

    text = admin.get(f"/hosts/{host.pk}/").content.decode()

    assert "256.0 GiB" in text and "274877906944" not in text
    assert "2026-12-01" in text and "1796150930" not in text  # boot time as a date
    assert "<del>16.0 GiB</del> &rarr; <ins>32.0 GiB</ins>" in text
    assert f"/jobs/{job.pk}/" in text and "Run on this host" in text
    assert "Save and add another" not in text and "{&quot;" not in text


def test_the_run_page_counts_the_hosts_its_targets_match(admin, hosts):
    count = admin.get("/run/count/", {"hosts": "127.0.2.1, 127.0.2.10", "groups": "web",
                                      "where": ""}).content.decode()  # fmt: skip
    assert 'data-count="4"' in count and "127.0.2.1, 127.0.2.2, 127.0.2.10" in count
    wrong = admin.get("/run/count/", {"where": "memory_gb>lots"}).content.decode()
    assert 'data-count="0"' in wrong and "compares numbers" in wrong
    page = admin.get("/run/?hosts=127.0.2.1").content.decode()
    assert 'hx-get="/run/count/"' in page and 'value="127.0.2.1"' in page


@pytest.fixture
def big_job(hosts):
    ips = [f"127.0.3.{i}" for i in range(1, 31)]
    for ip in ips:
        make_host(ip)
    job = make_job(*ips, command="hostname")
    job.host_tasks.update(stdout_head="same\n", stdout_bytes=5)
    job.host_tasks.filter(ip__in=["127.0.3.7", "127.0.3.8", "127.0.3.30"]).update(
        state=State.FAILED, exit_code=1, stdout_head="", stderr_head="boom\n"
    )
    job.host_tasks.filter(ip="127.0.3.9").update(state=State.UNREACHABLE, exit_code=None,
                                                  error="no agent took it")  # fmt: skip
    return job


def test_the_job_page_has_a_state_table_and_groups_the_output(admin, big_job):
    text = admin.get(f"/jobs/{big_job.pk}/").content.decode()

    states = dict(re.findall(r'data-state="(\w+)"><td><a[^>]*>\w+</a></td><td[^>]*>(\d+)', text))
    assert states == {"ok": "26", "failed": "3", "unreachable": "1"}
    labels = re.findall(r'class="group-label"[^>]*>([^<]+)<', text)
    # The odd ones first, then the rest, with ranges of addresses.
    assert labels == ["1 host: 127.0.3.9", "3 hosts: 127.0.3.7-8, 127.0.3.30",
                      "26 hosts: 127.0.3.1-6, 127.0.3.10-29"]  # fmt: skip
    assert "Re-run on failed hosts (4)" in text and 'id="job-cancel"' not in text
    assert "took" in text and "hx-trigger" not in text  # done: no polling


def test_the_job_page_filters_by_state_and_exports(admin, big_job):
    text = admin.get(f"/jobs/{big_job.pk}/?state=failed&view=hosts").content.decode()
    assert ips_in(text, "data-host") == ["127.0.3.7", "127.0.3.8", "127.0.3.30"]

    text_csv = admin.get(f"/jobs/{big_job.pk}/export.csv?state=failed").content.decode()
    assert [row[0] for row in csv_rows(io.StringIO(text_csv))] == [
        "host", "127.0.3.7", "127.0.3.8", "127.0.3.30"]  # fmt: skip
    jsonl = admin.get(f"/jobs/{big_job.pk}/export.jsonl").content.decode()
    assert len(jsonl.splitlines()) == 30
    assert admin.get(f"/jobs/{big_job.pk}/export.xml").status_code == 404


def test_a_running_job_polls_and_can_be_cancelled(admin, hosts):
    job = make_job("127.0.2.1", "127.0.2.2", state=State.RUNNING)

    text = admin.get(f"/jobs/{job.pk}/").content.decode()

    assert 'hx-trigger="every 2s"' in text and 'id="job-cancel"' in text
    assert "running for" in text


def test_cancel_and_rerun_take_a_post_with_csrf(hosts, big_job):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(superuser=True))

    assert client.get(f"/jobs/{big_job.pk}/rerun/").status_code == 405
    assert client.post(f"/jobs/{big_job.pk}/rerun/").status_code == 403  # no CSRF token
    assert client.post(f"/jobs/{big_job.pk}/cancel/").status_code == 403
    assert Job.objects.count() == 1


def test_rerun_needs_the_permission_to_run(client, big_job):
    user = make_user(*VIEWER, "jobs.cancel_job")
    user.is_staff = True
    user.save()
    client.force_login(user)

    page = client.get(f"/jobs/{big_job.pk}/").content.decode()
    answer = client.post(f"/jobs/{big_job.pk}/rerun/", follow=True).content.decode()

    assert "Re-run on failed hosts" not in page
    assert "may not re-run at all (needs the permission jobs.run_command)" in answer
    assert Job.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_rerun_on_failed_hosts_dispatches_them_only(admin, big_job, redis_url):
    answer = admin.post(f"/jobs/{big_job.pk}/rerun/", {"state": "failed"})

    new = Job.objects.exclude(pk=big_job.pk).get()
    assert answer.status_code == 302 and answer["Location"] == f"/jobs/{new.pk}/"
    assert new.command == "hostname"
    assert sorted(new.host_tasks.values_list("ip", flat=True)) == [
        "127.0.3.30", "127.0.3.7", "127.0.3.8"]  # fmt: skip


def test_the_dashboards_disk_figure_is_what_facts_says(admin, hosts, cli_user):
    # As the issue saw it: the fullest mount 26.0% used (of used + free to users, as df), and
    # 29.8% free of its size (the root reserve counted): the dashboard says and draws 26.0.
    host = make_host("127.0.9.1")
    make_facts(host, disk_free_pct=0.5)  # the fullest of all by free space
    Asset.objects.create(host=host, kind="mount", key="/", data={"fstype": "ext4",
                         "size_bytes": 274877906944}, metrics={"used_pct": 26.0})  # fmt: skip
    out = io.StringIO()
    call_command("facts", host.ip, stdout=out)
    said = re.search(r"/ ext4 .*?([\d.]+)% used", out.getvalue()).group(1)

    text = admin.get("/dashboard/").content.decode()

    row = re.search(r"127\.0\.9\.1</text></a><rect [^>]*width=\"(\d+)\".*?disk-used[^>]*>"
                    r"([\d.]+)% used", text)  # fmt: skip
    assert row, text
    assert row.group(2) == said == "26.0"
    assert int(row.group(1)) == round(3 * 26.0)  # the bar: 300 px is 100 %
    assert "% free" not in text and "used %" in text


def test_failed_jobs_are_red_on_the_dashboard(admin, big_job, hosts):
    make_job("127.0.2.1", command="true")

    text = admin.get("/dashboard/").content.decode()

    rows = re.findall(r'<tr class="dashboard-job( job-failed)?">', text)
    assert sorted(rows) == ["", " job-failed"]
    assert "4 failed" in text and "#c0392b" in text


def test_no_page_is_for_anonymous_users(client, big_job, hosts):
    for url in (
        "/fleet/",
        f"/hosts/{hosts['127.0.2.1'].pk}/",
        "/run/",
        "/run/count/",
        f"/jobs/{big_job.pk}/",
        f"/jobs/{big_job.pk}/export.csv",
    ):
        assert client.get(url).status_code == 302, url
    assert client.post(f"/jobs/{big_job.pk}/rerun/").status_code == 302


@pytest.mark.django_db(transaction=True)
def test_the_run_page_dispatches_and_asks_to_confirm_a_large_job(admin, hosts, redis_url,
                                                                 settings):  # fmt: skip
    settings.CMDB = {**settings.CMDB, "CONFIRM_ABOVE": 2}
    fields = {"command": "uptime", "hosts": "", "groups": "web", "where": "", "timeout": 30}

    answer = admin.post("/run/", {**fields, "where": "os=debian\nmemory_gb>=32"})
    asked = admin.post("/run/", {**fields, "groups": "", "where": "os=debian"}).content.decode()
    confirmed = admin.post("/run/", {**fields, "groups": "", "where": "os=debian",
                                     "confirm": "on"})  # fmt: skip

    first, second = Job.objects.order_by("created")
    assert answer["Location"] == f"/jobs/{first.pk}/"
    assert confirmed["Location"] == f"/jobs/{second.pk}/"
    assert sorted(first.host_tasks.values_list("ip", flat=True)) == ["127.0.2.100", "127.0.2.2"]
    assert "5 hosts are more than the 2 you may reach without confirming" in asked
    assert second.host_tasks.count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_rerun_above_the_ceiling_asks_to_confirm(admin, big_job, redis_url, settings):
    settings.CMDB = {**settings.CMDB, "CONFIRM_ABOVE": 2}

    asked = admin.post(f"/jobs/{big_job.pk}/rerun/", follow=True).content.decode()
    assert "Not re-run: 4 hosts are more than the 2" in asked
    assert 'name="confirm"' in asked and Job.objects.count() == 1

    admin.post(f"/jobs/{big_job.pk}/rerun/", {"confirm": "1"})
    new = Job.objects.exclude(pk=big_job.pk).get()
    assert new.host_tasks.count() == 4


def test_a_viewer_sees_no_run_forms_and_may_not_run(client, hosts):
    user = make_user(*VIEWER)
    user.is_staff = True
    user.save()
    client.force_login(user)

    assert "Run on this host" not in client.get(f"/hosts/{hosts['127.0.2.1'].pk}/").content.decode()
    assert 'id="fleet-run"' not in client.get("/fleet/").content.decode()
    assert client.get("/run/").status_code == 403
    nobody = make_user()
    nobody.is_staff = True
    nobody.save()
    client.force_login(nobody)
    assert client.get("/fleet/").status_code == 403
