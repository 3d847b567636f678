"""Rolling jobs and the confirmation of large ones through the API, to real agents."""

import pytest

from cmdb.audit.models import AuditEntry
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.api import poll
from tests.support.factories import make_host, tar_upload
from tests.support.fleet import fails_on, host_aware_agents

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

#: This module's agents (auto-accepted, nobody else's).
IPS = ["127.0.1.36", "127.0.1.37", "127.0.1.38", "127.0.1.39"]
E_CONFIRM = (
    "this job would reach 4 hosts, more than the 3 allowed without confirming "
    "(CMDB_CONFIRM_ABOVE): check the targets, then confirm with --yes (command line) or "
    '"confirm": true (API)'
)


@pytest.fixture(scope="module")
def agents(fleet):
    with host_aware_agents(fleet, IPS) as ips:
        yield ips


@pytest.fixture
def hosts(agents):
    return [make_host(ip) for ip in IPS]


@pytest.fixture
def operator(client_with):
    return client_with("jobs.run_command", "jobs.collect_facts", "jobs.view_job",
                       "jobs.view_hosttask", "jobs.view_output", username="alice")  # fmt: skip


@pytest.fixture
def ceiling_3(settings):
    settings.CMDB = {**settings.CMDB, "CONFIRM_ABOVE": 3}


def alices_jobs():
    """The operator's (agents that start collect facts of their own)."""
    return list(Job.objects.filter(requested_by="alice"))


def finished(client, answer: dict) -> dict:
    return poll(client, answer["url"], lambda b: b["done"], 90, f"job {answer['id']}")


def test_above_the_ceiling_the_api_refuses_records_nothing_and_audits_why(
    operator, hosts, ceiling_3
):
    response = operator.post("/api/jobs/", {"command": "echo hi", "hosts": IPS}, "json")

    assert response.status_code == 400, response.content
    assert response.json() == {"confirm": [E_CONFIRM]}
    assert not alices_jobs()
    entry = AuditEntry.objects.get(action="refused")
    assert (entry.username, entry.via, entry.detail["reason"]) == ("alice", "api", [E_CONFIRM])
    # Every kind.
    collect = operator.post("/api/jobs/", {"kind": "collect", "hosts": IPS}, "json")
    fetch = operator.post("/api/jobs/fetch/", {"path": "/etc/hostname", "hosts": IPS}, "json")
    push = operator.post("/api/jobs/push/", {"file": tar_upload({"a": b"a"}), "dest": "/tmp/x",
                                             "hosts": IPS})  # fmt: skip
    for refused in (collect, fetch, push):
        assert (refused.status_code, refused.json()) == (400, {"confirm": [E_CONFIRM]})
    assert not alices_jobs()

    answer = operator.post("/api/jobs/", {"command": "echo hi", "hosts": IPS, "confirm": True},
                           "json")  # fmt: skip

    assert answer.status_code == 202, answer.content
    job = finished(operator, answer.json())
    assert job["summary"] == {State.OK: 4}
    assert AuditEntry.objects.filter(action="dispatch", username="alice").count() == 1


def test_a_rolling_command_through_the_api_stops_after_its_canary_and_one_batch(operator, hosts):
    # The canary .36 passes; 50% of 4 is 2 a batch: .37 fails, .38 passes; .39 is stopped.
    body = {"command": fails_on(IPS[1]), "hosts": IPS, "canary": 1, "batch": "50%",
            "max_failures": 0}  # fmt: skip

    answer = operator.post("/api/jobs/", body, "json")

    assert answer.status_code == 202, answer.content
    job = finished(operator, answer.json())
    assert job["rolling"] == {"canary": 1, "batch": {"given": "50%", "hosts": 2},
                              "max_failures": {"given": "0", "hosts": 0}}  # fmt: skip
    got = {t["host"]: (t["state"], t["error"]) for t in job["tasks"]}
    assert [got[ip][0] for ip in IPS] == [State.OK, State.FAILED, State.OK, State.CANCELLED]
    assert got[IPS[3]][1] == (
        "not started: 1 host(s) failed, more than the 0 allowed (--max-failures 0)"
    )
    batches = dict(HostTask.objects.filter(job_id=job["id"]).values_list("ip", "batch"))
    assert [batches[ip] for ip in IPS] == [0, 1, 1, 2]


def test_wrong_rolling_fields_are_a_400_by_field_and_nothing_is_recorded(operator, hosts):
    body = {"command": "true", "hosts": IPS, "batch": 0, "max_failures": "many",
            "canary": "0"}  # fmt: skip

    errors = operator.post("/api/jobs/", body, "json").json()

    assert set(errors) == {"batch", "max_failures", "canary"}
    assert errors["batch"] == ["batch must be a number of hosts (1 or more) or a percentage of "
                               "the job's hosts (more than 0%, at most 100%), not 0"]  # fmt: skip
    assert "not 'many'" in errors["max_failures"][0] and "not '0'" in errors["canary"][0]
    alone = operator.post("/api/jobs/", {"command": "true", "hosts": IPS, "max_failures": 1},
                          "json")  # fmt: skip
    assert alone.status_code == 400
    assert alone.json()["max_failures"][0].startswith("max failures needs a batch or a canary")
    percent = operator.post("/api/jobs/fetch/", {"path": "/x", "hosts": IPS, "batch": "150%"},
                            "json")  # fmt: skip
    assert "not '150%'" in percent.json()["batch"][0]
    assert not alices_jobs()


def test_the_schema_documents_the_rolling_fields_and_the_confirmation(operator):
    schema = operator.get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]

    props = schema["JobRequest"]["properties"]
    percent = {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}
    assert props["batch"]["oneOf"] == [{"type": "integer", "minimum": 1}, percent]
    assert props["max_failures"]["oneOf"][0] == {"type": "integer", "minimum": 0}
    assert props["canary"]["type"] == "integer" and props["confirm"]["type"] == "boolean"
    for body in ("PushRequest", "FetchRequest"):
        assert {"batch", "max_failures", "canary", "confirm"} <= set(schema[body]["properties"])
    assert "confirm" in schema["DispatchErrors"]["properties"]
    assert set(schema["Job"]["properties"]["rolling"]["allOf"][0]["$ref"].split("/")[-1:]) == {
        "Rolling"}  # fmt: skip
