"""POST /api/jobs/ with bad input: a 400 naming every wrong field, and nothing recorded."""

import pytest
from celery import Celery
from django.conf import settings

from cmdb.api.views import JobViewSet
from cmdb.hosts.models import Host
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.api import make_group, make_job
from tests.support.factories import make_host
from tests.support.fleet import free_port

pytestmark = pytest.mark.django_db

MAX_TIMEOUT = settings.CMDB["MAX_TIMEOUT"]
OK = {"command": "uptime", "hosts": ["127.0.1.1"]}


@pytest.fixture
def dispatcher(client_with):
    make_host("127.0.1.1", hostname="alpha")
    make_host("127.0.1.2", hostname="beta")
    return client_with("jobs.run_command", "jobs.collect_facts", "jobs.view_job")


def post(client, **changes):
    body = {key: value for key, value in {**OK, **changes}.items() if value is not ...}
    return client.post("/api/jobs/", body, "json")


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"hosts": ["127.0.9.9"]}, "hosts", "unknown host 127.0.9.9"),
        ({"hosts": ["no-such-host"]}, "hosts", "unknown host 'no-such-host'"),
        ({"hosts": ["10.0.3"]}, "hosts", "malformed IP address: '10.0.3'"),
        ({"hosts": ["999.1.1.1"]}, "hosts", "malformed IP address: '999.1.1.1'"),
        ({"hosts": [""]}, "hosts", "malformed IP address: ''"),
        ({"hosts": "127.0.1.1"}, "hosts", "Expected a list"),
        ({"hosts": [["127.0.1.1"]]}, "hosts", "item 0: Not a valid string."),
        ({"where": ["os=debian", ""]}, "where", "item 1: This field may not be blank."),
        ({"hosts": ..., "groups": ..., "where": ...}, "hosts", "no target hosts given"),
        ({"hosts": [], "where": ["os=plan9"]}, "hosts", "no host matches"),
        ({"command": ""}, "command", "the command is empty"),
        ({"command": "   "}, "command", "the command is empty"),
        ({"command": ...}, "command", "the command is empty"),
        ({"command": "echo \x00"}, "command", "Null characters are not allowed"),
        ({"timeout": 0}, "timeout", f"timeout must be between 1 and {MAX_TIMEOUT} seconds, not 0"),
        ({"timeout": -5}, "timeout", f"between 1 and {MAX_TIMEOUT} seconds, not -5"),
        ({"timeout": 10**30}, "timeout", f"between 1 and {MAX_TIMEOUT} seconds, not 1000"),
        ({"timeout": "soon"}, "timeout", "A valid integer is required"),
        ({"reach_timeout": 0}, "reach_timeout", "reach timeout must be between 1 and 3000"),
        ({"reach_timeout": 3001}, "reach_timeout", "between 1 and 3000 seconds, not 3001"),
        ({"groups": ["no-such-group"]}, "groups", "unknown group 'no-such-group'"),
        ({"where": ["os"]}, "where", "expected FIELD OP VALUE"),
        ({"where": ["colour=red"]}, "where", "unknown field 'colour'"),
        ({"where": ["cpu_threads>many"]}, "where", "compares numbers"),
        ({"kind": "reboot"}, "kind", "not a valid choice"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_reason(dispatcher, changes, field, text):
    response = post(dispatcher, **changes)

    assert response.status_code == 400, response.content
    body = response.json()
    assert list(body) == [field], body
    assert any(text in message for message in body[field]), body
    assert not Job.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(dispatcher):
    response = dispatcher.post("/api/jobs/", ["uptime"], "json")

    assert response.status_code == 400
    assert list(response.json()) == ["non_field_errors"]


def test_every_problem_is_reported_at_once(dispatcher):
    response = post(
        dispatcher,
        command=" ",
        hosts=["127.0.1.1", "10.0.3", "127.0.9.9"],
        groups=["nope"],
        where=["os"],
        timeout=0,
    )

    body = response.json()
    assert response.status_code == 400
    assert set(body) == {"command", "hosts", "groups", "where", State.TIMEOUT}
    assert len(body["hosts"]) == 2  # the malformed one and the unknown one


def test_a_collection_needs_no_command(dispatcher):
    response = post(dispatcher, kind="collect", command=..., hosts=["127.0.1.1"], timeout=0)

    assert response.status_code == 400
    assert list(response.json()) == [State.TIMEOUT]


def test_targets_by_group_and_where_are_validated_together(dispatcher):
    make_group("web", Host.objects.get(ip="127.0.1.1"))

    response = post(dispatcher, hosts=[], groups=["web"], where=["hostname=nobody"])

    assert response.status_code == 400
    assert "no host matches" in response.json()["hosts"][0]


# --- the broker is down ---------------------------------------------------------------------------
@pytest.fixture
def dead_broker(monkeypatch):
    """The dispatching view publishes with an app whose broker refuses connections.

    The view's Celery app is a collaborator: replacing it leaves the suite's app (and its
    connection pool to the real broker) untouched.
    """
    app = Celery("cmdb-dead-broker", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setattr(JobViewSet, "celery_app", app)
    yield app
    app.close()


@pytest.mark.django_db(transaction=True)
def test_broker_down_is_a_503_and_the_job_says_it_was_not_dispatched(dispatcher, dead_broker):
    response = post(dispatcher, hosts=["127.0.1.1", "beta"])

    assert response.status_code == 503, response.content
    body = response.json()
    assert "broker unreachable" in body["detail"]
    assert "not dispatched" in body["detail"]
    job = Job.objects.get()
    assert body["job"] == str(job.pk)
    assert "broker unreachable" in job.dispatch_error
    assert set(HostTask.objects.values_list("state", flat=True)) == {State.ERROR}
    # The job reads the same through the API.
    shown = dispatcher.get(f"/api/jobs/{job.pk}/").json()
    assert "broker unreachable" in shown["dispatch_error"]
    assert shown["done"] is True
    assert {t["state"] for t in shown["tasks"]} == {State.ERROR}
    assert {t["celery_state"] for t in shown["tasks"]} == {"FAILURE"}


@pytest.mark.django_db(transaction=True)
def test_broker_down_at_cancel_is_a_503(client_with, dead_broker):
    make_host("127.0.1.1")
    job = make_job("127.0.1.1", state=State.PENDING)
    client = client_with("jobs.cancel_job")

    response = client.post(f"/api/jobs/{job.pk}/cancel/")

    assert response.status_code == 503
    assert "broker unreachable" in response.json()["detail"]
    assert job.host_tasks.get().state == State.PENDING
