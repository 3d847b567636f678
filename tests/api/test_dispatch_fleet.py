"""Dispatch through the API to real agents over the real broker, then poll, filter and cancel."""

import pytest
from django_celery_results.models import TaskResult

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import Job
from tests.support.api import make_group, poll
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(fleet):
    return [make_host(ip, hostname=f"agent-{i}") for i, ip in enumerate(AGENT_IPS, 1)]


@pytest.fixture
def operator(client_with):
    """May read everything, run, collect and cancel; by the name jobs record."""
    return client_with(
        "jobs.run_command",
        "jobs.collect_facts",
        "jobs.cancel_job",
        "jobs.view_job",
        "jobs.view_hosttask",
        "jobs.view_output",
        "hosts.view_host",
        username="alice",
    )


def dispatch(client, **body) -> dict:
    response = client.post("/api/jobs/", body, "json")
    assert response.status_code == 202, response.content
    return response.json()


def wait_job(client, job: dict, timeout: float = 60) -> dict:
    return poll(client, job["url"], lambda b: b["done"], timeout, f"job {job['id']}")


def wait_task(client, url: str, states: set[str], timeout: float = 30) -> dict:
    return poll(client, url, lambda b: b["state"] in states, timeout, f"{url} in {states}")


def test_dispatch_answers_at_once_then_the_job_shows_each_hosts_result(operator, hosts):
    command = "echo out-$(hostname | wc -c); echo oops >&2"

    answer = dispatch(operator, command=command, hosts=AGENT_IPS, timeout=30)

    assert set(answer) == {"id", "kind", "tasks", "url", "not_answering"}
    assert answer["not_answering"] == {"skipped": [], "offline": [], "never_seen": []}
    assert answer["kind"] == "command"
    assert [t["host"] for t in answer["tasks"]] == AGENT_IPS
    assert answer["url"] == f"http://testserver/api/jobs/{answer['id']}/"
    job = wait_job(operator, answer)
    assert (job["ok"], job["summary"]) == (True, {"ok": 2})
    assert job["requested_by"] == "alice"
    assert job["dispatch_error"] == ""
    assert job["dispatched_at"]
    assert [t["task_id"] for t in job["tasks"]] == [t["task_id"] for t in answer["tasks"]]
    for task in job["tasks"]:
        assert (task["state"], task["exit_code"], task["celery_state"]) == (State.OK, 0, "SUCCESS")
        assert task["stdout"]["head"].startswith("out-")
        assert task["stderr"] == {"head": "oops\n", "tail": "", "bytes": 5, "truncated": False}
        assert task["duration"] >= 0
        assert task["agent"] == f"agent@{task['host']}"
        assert TaskResult.objects.get(task_id=task["task_id"]).status == "SUCCESS"
    assert Job.objects.get(pk=answer["id"]).requested_by == "alice"


def test_each_host_task_can_be_polled_by_its_celery_task_id(operator, hosts):
    answer = dispatch(operator, command="echo done; exit 3", hosts=["agent-1"])
    (sent,) = answer["tasks"]

    task = wait_task(operator, f"/api/host-tasks/{sent['task_id']}/", State.terminal())

    # A non-zero exit is a failed host task, and a Celery SUCCESS: the command did run.
    assert (task["state"], task["exit_code"], task["celery_state"]) == (State.FAILED, 3, "SUCCESS")
    assert (task["host"], task["job"]) == (AGENT_IPS[0], answer["id"])
    assert task["stdout"]["head"] == "done\n"


def test_big_output_keeps_head_and_tail_and_states_the_true_size(operator, hosts):
    answer = dispatch(operator, command="seq 1 100000", hosts=[AGENT_IPS[1]])

    (task,) = wait_job(operator, answer)["tasks"]

    assert task["state"] == State.OK
    assert task["stdout"]["truncated"] is True
    assert task["stdout"]["bytes"] == len("".join(f"{i}\n" for i in range(1, 100001)))
    assert task["stdout"]["head"].startswith("1\n2\n3\n")
    assert task["stdout"]["tail"].endswith("99999\n100000\n")


def test_a_timeout_ends_the_host_task_with_the_reason(operator, hosts):
    answer = dispatch(operator, command="sleep 30", hosts=[AGENT_IPS[0]], timeout=1)

    (task,) = wait_job(operator, answer)["tasks"]

    assert task["state"] == State.TIMEOUT
    assert "timed out after 1" in task["error"]
    assert task["celery_state"] == "FAILURE"


def test_targets_by_group_and_by_stored_facts(operator, hosts):
    make_group("pair", *hosts)

    by_group = dispatch(operator, command="true", groups=["pair"])
    by_where = dispatch(operator, command="true", where=["hostname=agent-2"])
    narrowed = dispatch(operator, command="true", groups=["pair"], where=["ip!=127.0.1.2"])

    assert [t["host"] for t in by_group["tasks"]] == AGENT_IPS
    assert [t["host"] for t in by_where["tasks"]] == [AGENT_IPS[1]]
    assert [t["host"] for t in narrowed["tasks"]] == [AGENT_IPS[0]]
    for answer in (by_group, by_where, narrowed):
        assert wait_job(operator, answer)["ok"]


def test_a_collection_stores_facts_the_hosts_list_then_filters_on(operator, hosts):
    answer = dispatch(operator, kind="collect", hosts=[AGENT_IPS[0]])

    job = wait_job(operator, answer, timeout=90)

    assert (job["kind"], job["ok"]) == ("collect", True)
    host = operator.get(f"/api/hosts/?ip={AGENT_IPS[0]}").json()["results"][0]
    os_id = host["facts"]["os"]
    assert os_id
    found = operator.get(f"/api/hosts/?where=os={os_id}&where=cpu_threads>=1").json()
    assert [h["ip"] for h in found["results"]] == [AGENT_IPS[0]]  # agent-2 was never collected
    assert operator.get(f"/api/hosts/?os={os_id}").json()["count"] == 1


def test_cancel_stops_a_running_command_and_keeps_its_output(operator, hosts):
    answer = dispatch(operator, command="echo started; sleep 120", hosts=[AGENT_IPS[1]])
    url = f"/api/host-tasks/{answer['tasks'][0]['task_id']}/"
    wait_task(operator, url, {State.RUNNING})

    response = operator.post(f"/api/jobs/{answer['id']}/cancel/")

    assert (response.status_code, response.json()) == (202, {"cancelled": 1})
    task = wait_task(operator, url, State.terminal(), timeout=20)
    assert task["state"] == State.CANCELLED
    assert task["stdout"]["head"] == "started\n"
    assert task["celery_state"] == "REVOKED"
    again = operator.post(f"/api/jobs/{answer['id']}/cancel/")
    assert (again.status_code, again.json()) == (202, {"cancelled": 0})


def test_cancel_of_a_task_no_agent_took_ends_it_at_once(operator, fleet):
    make_host("127.0.1.77", with_agent=False)
    answer = dispatch(operator, command="echo never", hosts=["127.0.1.77"])
    task_id = answer["tasks"][0]["task_id"]

    response = operator.post(f"/api/host-tasks/{task_id}/cancel/")

    assert (response.status_code, response.json()) == (202, {"cancelled": 1})
    task = operator.get(f"/api/host-tasks/{task_id}/").json()
    assert task["state"] == State.CANCELLED
    assert "cancelled before any agent started it" in task["error"]
