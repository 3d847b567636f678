"""Reading the CMDB: hosts, groups, assets, changes, jobs and host tasks; filters; query counts."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cmdb.access import services as grant_services
from cmdb.api.views import JobViewSet
from cmdb.hosts.models import Host
from cmdb.jobs.choices import HostTaskStateChoices as State
from tests.support.api import (
    make_asset,
    make_change,
    make_facts,
    make_group,
    make_job,
    make_user,
    token_client,
)
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db


def ips(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["ip"] for row in response.json()["results"]]


@pytest.fixture
def fleet_rows():
    """Three hosts: two Debian web servers, one Rocky database server without an agent."""
    web1 = make_host("10.0.0.1", hostname="web-1")
    web2 = make_host("10.0.0.2", hostname="web-2")
    db1 = make_host("10.0.0.3", hostname="db-1", with_agent=False)
    make_facts(web1, disk_free_pct=5.0)
    make_facts(web2, arch="aarch64", cpu_model="Neoverse-N1")
    make_facts(db1, os="rocky", os_version="9", memory_bytes=64 * 2**30)
    make_group("web", web1, web2)
    make_group("prod", web1, db1)
    return web1, web2, db1


# --- hosts ---------------------------------------------------------------------------------------
def test_a_host_shows_its_agent_groups_and_stored_facts(viewer, fleet_rows):
    web1 = fleet_rows[0]

    body = viewer.get(f"/api/hosts/{web1.pk}/").json()

    assert body["ip"] == "10.0.0.1"
    assert body["hostname"] == "web-1"
    assert body["agent_status"] == "online"
    assert sorted(body["groups"]) == ["prod", "web"]
    assert body["facts"]["os"] == "debian"
    assert body["facts"]["disk_free_pct"] == 5.0
    assert body["url"] == f"http://testserver/api/hosts/{web1.pk}/"


def test_a_host_never_collected_has_null_facts(viewer):
    host = make_host("10.0.0.9")

    assert viewer.get(f"/api/hosts/{host.pk}/").json()["facts"] is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        ("ip=10.0.0.2", ["10.0.0.2"]),
        ("hostname=WEB-1", ["10.0.0.1"]),
        ("group=web", ["10.0.0.1", "10.0.0.2"]),
        ("group=prod&group=web", ["10.0.0.1", "10.0.0.2"]),  # the last value counts
        ("status=online", ["10.0.0.1", "10.0.0.2"]),
        ("status=unknown", ["10.0.0.3"]),
        ("os=rocky", ["10.0.0.3"]),
        ("os=debian&arch=aarch64", ["10.0.0.2"]),
        ("cpu_model=neoverse", ["10.0.0.2"]),
        ("where=os=debian", ["10.0.0.1", "10.0.0.2"]),
        ("where=disk_free_pct<10", ["10.0.0.1"]),
        ("where=memory_gb>=32", ["10.0.0.3"]),
        ("where=os!=debian", ["10.0.0.3"]),
        ("where=cpu_model~xeon&where=group=prod", ["10.0.0.1", "10.0.0.3"]),
        # A host in two matching groups comes once.
        ("where=group~e", ["10.0.0.1", "10.0.0.2"]),
        ("where=os=debian&group=prod", ["10.0.0.1"]),
        ("ip=10.0.0.99", []),
    ],
)
def test_hosts_filter_by_inventory_and_stored_facts(viewer, fleet_rows, query, expected):
    assert ips(viewer.get(f"/api/hosts/?{query}")) == expected


@pytest.mark.parametrize(
    ("query", "field", "text"),
    [
        ("ip=10.0.3", "ip", "valid IPv4"),
        ("ip=999.1.1.1", "ip", "valid IPv4"),
        ("status=asleep", "status", "not one of the available choices"),
        ("where=os", "where", "expected FIELD OP VALUE"),
        ("where=colour=red", "where", "unknown field 'colour'"),
        ("where=disk_free_pct<lots", "where", "compares numbers"),
        ("where=os=debian&where=hostname>3", "where", "hostname is text"),
        ("where=disk_free_pct<50%25", "where", "'50%' is not one"),
    ],
)
def test_a_bad_host_filter_is_a_400_naming_the_parameter(viewer, fleet_rows, query, field, text):
    response = viewer.get(f"/api/hosts/?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert text in " ".join(response.json()[field])


def test_where_reports_every_bad_expression(viewer):
    response = viewer.get("/api/hosts/?where=os&where=colour=red&where=os=debian")

    assert response.status_code == 400
    assert len(response.json()["where"]) == 2


def test_host_groups_list_their_members(viewer, fleet_rows):
    body = viewer.get("/api/host-groups/?name=web").json()

    assert body["count"] == 1
    assert body["results"][0]["hosts"] == ["10.0.0.1", "10.0.0.2"]


# --- assets and changes --------------------------------------------------------------------------
def test_assets_filter_by_host_and_kind(viewer, fleet_rows):
    web1, web2, _ = fleet_rows
    make_asset(web1, "disk", "sda")
    make_asset(web1, "nic", "aa:bb:cc:dd:ee:ff")
    make_asset(web2, "disk", "nvme0n1")

    def keys(query):
        response = viewer.get(f"/api/assets/?{query}")
        assert response.status_code == 200, response.content
        return sorted(row["key"] for row in response.json()["results"])

    assert keys("host=10.0.0.1") == ["aa:bb:cc:dd:ee:ff", "sda"]
    assert keys(f"host_id={web2.pk}") == ["nvme0n1"]
    assert keys("kind=disk") == ["nvme0n1", "sda"]
    assert keys("host=10.0.0.1&kind=nic") == ["aa:bb:cc:dd:ee:ff"]
    row = viewer.get("/api/assets/?kind=nic").json()["results"][0]
    assert row["host"]["ip"] == "10.0.0.1"
    assert row["data"] == {"size": 1}
    assert viewer.get("/api/assets/?kind=floppy").status_code == 400


def test_changes_filter_by_host_kind_action_and_time(viewer, fleet_rows):
    web1, web2, _ = fleet_rows
    now = timezone.now()
    make_change(web1, time=now - timedelta(days=10))
    make_change(web1, action="added", kind="disk", key="sdb", time=now - timedelta(hours=2))
    make_change(
        web2,
        action="changed",
        kind="disk",
        key="sda",
        field="size",
        old=1,
        new=2,
        time=now - timedelta(minutes=5),
    )

    def actions(query):
        response = viewer.get(f"/api/changes/?{query}")
        assert response.status_code == 200, response.content
        return [row["action"] for row in response.json()["results"]]

    assert actions("") == ["changed", "added", "discovered"]  # newest first
    assert actions("host=10.0.0.1") == ["added", "discovered"]
    assert actions("kind=disk&action=added") == ["added"]
    assert actions("since=1d") == ["changed", "added"]
    assert actions("since=30m") == ["changed"]
    assert actions("until=1h") == ["added", "discovered"]
    since = (now - timedelta(days=3)).isoformat()
    until = (now - timedelta(hours=1)).isoformat()
    assert actions(f"since={since.replace('+', '%2B')}&until={until.replace('+', '%2B')}") == [
        "added"
    ]
    assert actions("since=2000-01-01T00:00:00") == ["changed", "added", "discovered"]
    row = viewer.get("/api/changes/?action=changed").json()["results"][0]
    assert (row["field"], row["old"], row["new"]) == ("size", 1, 2)


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "since=2026-13-45T00:00:00",
        "until=99999999999w",
        "since=0001-01-01T00:00:00%2B01:00",
        "until=9999-12-31T23:59:59-01:00",
        "host_id=99999999999999999999",
        "action=x",
    ],
)
def test_a_bad_change_filter_is_a_400(viewer, query):
    response = viewer.get(f"/api/changes/?{query}")

    assert response.status_code == 400
    assert list(response.json()) == [query.split("=")[0]]


# --- jobs and host tasks -------------------------------------------------------------------------
def test_a_job_shows_every_hosts_result_inline(viewer, fleet_rows):
    job = make_job("10.0.0.1", "10.0.0.2", requested_by="alice")

    body = viewer.get(f"/api/jobs/{job.pk}/").json()

    assert body["id"] == str(job.pk)
    assert (body["kind"], body["command"], body["requested_by"]) == ("command", "uptime", "alice")
    assert (body["done"], body["ok"], body["summary"]) == (True, True, {"ok": 2})
    first = body["tasks"][0]
    assert first["host"] == "10.0.0.1"
    assert (first["state"], first["exit_code"], first["duration"]) == (State.OK, 0, 0.25)
    assert first["celery_state"] == "SUCCESS"
    assert first["stdout"] == {
        "head": "out of 10.0.0.1\n",
        "tail": "",
        "bytes": 16,
        "truncated": False,
    }
    assert first["stderr"]["bytes"] == 0
    assert first["url"] == f"http://testserver/api/host-tasks/{first['task_id']}/"


def test_a_pending_host_task_has_no_task_result_yet_and_reads_pending(viewer, fleet_rows):
    job = make_job("10.0.0.3", state=State.PENDING)

    body = viewer.get(f"/api/jobs/{job.pk}/").json()

    assert (body["done"], body["ok"]) == (False, False)
    assert body["tasks"][0]["celery_state"] == "PENDING"


def test_a_host_task_is_found_by_its_celery_task_id(viewer, fleet_rows):
    job = make_job("10.0.0.1", "10.0.0.2")
    task = job.host_tasks.get(ip="10.0.0.2")

    body = viewer.get(f"/api/host-tasks/{task.task_id}/").json()

    assert (body["task_id"], body["job"], body["host"]) == (task.task_id, str(job.pk), "10.0.0.2")
    assert body["celery_state"] == "SUCCESS"
    assert viewer.get("/api/host-tasks/no-such-task/").status_code == 404


def test_jobs_and_host_tasks_filter(viewer, fleet_rows):
    first = make_job("10.0.0.1", requested_by="alice")
    make_job("10.0.0.2", state=State.FAILED, requested_by="bob", kind="collect")

    def job_ids(query):
        return [row["id"] for row in viewer.get(f"/api/jobs/?{query}").json()["results"]]

    assert job_ids("requested_by=alice") == [str(first.pk)]
    assert len(job_ids("kind=collect")) == 1
    assert len(job_ids("since=1h")) == 2
    tasks = viewer.get("/api/host-tasks/?state=failed").json()["results"]
    assert [t["host"] for t in tasks] == ["10.0.0.2"]
    tasks = viewer.get(f"/api/host-tasks/?job={first.pk}&host=10.0.0.1").json()["results"]
    assert len(tasks) == 1
    assert viewer.get("/api/host-tasks/?job=not-a-uuid").status_code == 400


def test_an_unknown_job_id_is_404(viewer):
    assert viewer.get("/api/jobs/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert viewer.get("/api/jobs/not-a-uuid/").status_code == 404
    # A path that matches no route at all is a JSON 404 too, under /api/ (not Django's page).
    unrouted = viewer.get("/api/jobs/0.5/files/")
    assert unrouted.status_code == 404 and unrouted.json() == {"detail": "Not found."}
    assert viewer.get("/no-such-page/")["Content-Type"].startswith("text/html")


# --- pagination and query counts -----------------------------------------------------------------
def test_lists_are_paginated_with_a_ceiling_on_limit(viewer):
    for i in range(5):
        make_host(f"10.0.1.{i + 1}")

    page = viewer.get("/api/hosts/?limit=2&offset=2").json()

    assert page["count"] == 5
    assert [h["ip"] for h in page["results"]] == ["10.0.1.3", "10.0.1.4"]
    assert page["next"].endswith("limit=2&offset=4")
    huge = viewer.get("/api/hosts/?limit=100000000000000000000000&offset=0")
    assert huge.status_code == 200
    assert len(huge.json()["results"]) == 5
    beyond = viewer.get("/api/hosts/?offset=100000000000000000000000")
    assert (beyond.status_code, beyond.json()["results"]) == (200, [])


def _add_hosts(start: int, count: int) -> None:
    group = make_group(f"g{start}")
    for i in range(start, start + count):
        host = make_host(f"10.1.0.{i}", hostname=f"h{i}")
        make_facts(host)
        group.hosts.add(host)
        make_group(f"solo{i}", host)


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("url", ["/api/hosts/", "/api/hosts/?where=os=debian&group=g1"])
def test_the_hosts_list_costs_the_same_queries_for_2_or_20_hosts(viewer, url):
    _add_hosts(1, 2)
    few = _queries(viewer, url)
    _add_hosts(3, 18)

    assert Host.objects.count() == 20
    assert _queries(viewer, url) == few


def test_the_jobs_list_costs_the_same_queries_for_2_or_20_jobs(
    viewer, django_assert_max_num_queries
):
    make_host("10.0.0.1")
    make_host("10.0.0.2")
    for _ in range(2):
        make_job("10.0.0.1", "10.0.0.2")
    few = _queries(viewer, "/api/jobs/")
    for _ in range(18):
        make_job("10.0.0.1", "10.0.0.2")

    with django_assert_max_num_queries(few):
        body = viewer.get("/api/jobs/").json()
    assert body["count"] == 20
    assert all(len(job["tasks"]) == 2 for job in body["results"])
    assert _queries(viewer, "/api/host-tasks/") == _queries(viewer, "/api/host-tasks/?limit=3")


def test_assets_and_changes_lists_do_not_query_per_row(viewer, fleet_rows):
    for host in fleet_rows:
        make_asset(host)
        make_change(host)
    few = {url: _queries(viewer, url) for url in ("/api/assets/", "/api/changes/")}
    for i in range(10):
        host = make_host(f"10.2.0.{i}")
        make_asset(host)
        make_change(host)

    assert {url: _queries(viewer, url) for url in few} == few


def test_a_large_job_shows_its_first_host_tasks_and_links_to_the_rest(viewer, monkeypatch):
    monkeypatch.setattr(JobViewSet, "tasks_shown", 2)
    ips = [f"10.0.5.{i}" for i in (5, 1, 4, 2, 3)]
    for ip in ips:
        make_host(ip)
    job = make_job(*ips)
    job.host_tasks.filter(ip="10.0.5.5").update(state=State.FAILED)

    body = viewer.get(f"/api/jobs/{job.pk}/").json()

    # The counts are of every host task; the tasks inline only the first, by IP.
    assert (body["done"], body["ok"], body["summary"]) == (True, False, {"ok": 4, "failed": 1})
    assert [t["host"] for t in body["tasks"]] == ["10.0.5.1", "10.0.5.2"]
    assert body["tasks_next"] == f"http://testserver/api/jobs/{job.pk}/tasks/?limit=2&offset=2"
    rest = viewer.get(body["tasks_next"]).json()
    assert rest["count"] == 5
    assert [t["host"] for t in rest["results"]] == ["10.0.5.3", "10.0.5.4"]
    last = viewer.get(rest["next"]).json()
    assert [(t["host"], t["state"]) for t in last["results"]] == [("10.0.5.5", State.FAILED)]
    assert last["next"] is None
    everything = viewer.get(f"/api/jobs/{job.pk}/tasks/").json()["results"]
    assert everything == [*body["tasks"], *rest["results"], *last["results"]]
    # The list shows each job so too.
    (listed,) = viewer.get("/api/jobs/").json()["results"]
    assert (listed["summary"], listed["tasks"], listed["tasks_next"]) == (
        body["summary"], body["tasks"], body["tasks_next"])  # fmt: skip


def test_a_job_that_fits_has_no_next_page_of_host_tasks(viewer, fleet_rows):
    job = make_job("10.0.0.1", "10.0.0.2")

    body = viewer.get(f"/api/jobs/{job.pk}/").json()

    assert len(body["tasks"]) == 2 and body["tasks_next"] is None


def test_a_jobs_host_tasks_are_only_those_one_may_view(fleet_rows):
    mine = make_job("10.0.0.1", "10.0.0.3")
    other = make_job("10.0.0.3")
    client = token_client(make_user("jobs.view_job", "jobs.view_output", username="webops",
                                    everywhere=False))  # fmt: skip
    grant_services.add("webops", ["view"], ["web"])

    body = client.get(f"/api/jobs/{mine.pk}/tasks/").json()

    assert [t["host"] for t in body["results"]] == ["10.0.0.1"]
    assert client.get(f"/api/jobs/{mine.pk}/").json()["hidden_hosts"] == 1
    assert client.get(f"/api/jobs/{other.pk}/tasks/").status_code == 404


def test_jobs_filtered_by_state_match_only_by_host_tasks_one_may_view(fleet_rows):
    failed_on_web = make_job("10.0.0.1", state=State.FAILED)
    failed_on_db = make_job("10.0.0.1", command="true")  # ok where webops may look ...
    HostTask = failed_on_db.host_tasks.model
    HostTask.objects.create(job=failed_on_db, host=Host.objects.get(ip="10.0.0.3"),
                            ip="10.0.0.3", task_id="db-failed", state=State.FAILED)  # fmt: skip
    ok = make_job("10.0.0.1", "10.0.0.2")
    client = token_client(make_user("jobs.view_job", username="webops", everywhere=False))
    grant_services.add("webops", ["view"], ["web"])

    def listed(**query):
        answer = client.get("/api/jobs/", query)
        assert answer.status_code == 200, answer.content
        return {row["id"] for row in answer.json()["results"]}

    # ... failed only on a host webops may not view: not "failed" for them.
    assert listed(state="failed") == {str(failed_on_web.pk)}
    assert listed(state=["failed", "ok"]) == {str(failed_on_web.pk), str(failed_on_db.pk),
                                              str(ok.pk)}  # fmt: skip
    assert client.get("/api/jobs/", {"state": "exploded"}).status_code == 400


def test_a_job_shown_by_its_first_host_tasks_is_still_cancelled_whole(viewer, monkeypatch):
    monkeypatch.setattr(JobViewSet, "tasks_shown", 1)
    for ip in ("10.0.6.1", "10.0.6.2", "10.0.6.3"):
        make_host(ip)
    job = make_job("10.0.6.1", "10.0.6.2", "10.0.6.3", state=State.PENDING)
    view = JobViewSet(action="cancel", request=type("R", (), {"user": make_user(superuser=True)}))

    assert len(view.tasks_to_cancel(view.get_queryset().get(pk=job.pk))) == 3


def test_every_host_in_a_list_links_to_its_own_detail(viewer, fleet_rows):
    body = viewer.get("/api/hosts/?limit=3").json()

    for host in body["results"]:
        assert host["url"] == f"http://testserver/api/hosts/{host['id']}/"
        assert viewer.get(host["url"]).json()["ip"] == host["ip"]
