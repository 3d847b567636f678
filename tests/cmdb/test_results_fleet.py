"""A job of 300 hosts through real agents (4 of them; the other 296 never answer): the warning
at dispatch, the grouped result, the failed hosts' list, and re-running only those, from the
CLI and the API."""

import json

import pytest

from cmdb.hosts.choices import AgentStatusChoices
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.api import make_user, token_client
from tests.support.cli import ID_LINE
from tests.support.factories import make_host
from tests.support.fleet import fails_on, host_aware_agents

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

#: This module's agents (auto-accepted, nobody else's); the last one's command fails.
AGENTS = ["127.0.1.71", "127.0.1.72", "127.0.1.73", "127.0.1.74"]
#: Hosts whose agent never connected, and some that were seen once and are offline now.
SILENT = [f"127.0.2.{n}" for n in range(1, 251)] + [f"127.0.3.{n}" for n in range(1, 47)]
OFFLINE = SILENT[-10:]


def numeric(ips):
    return sorted(ips, key=lambda ip: tuple(int(p) for p in ip.split(".")))


@pytest.fixture(scope="module")
def agents(fleet):
    with host_aware_agents(fleet, AGENTS) as ips:
        yield ips


@pytest.fixture
def fleet_of_300(agents):
    group = HostGroup.objects.create(name="scale")
    hosts = [make_host(ip) for ip in AGENTS] + [make_host(ip, with_agent=False) for ip in SILENT]
    group.hosts.set(hosts)
    Host.objects.filter(ip__in=OFFLINE).update(agent_status=AgentStatusChoices.OFFLINE,
                                               last_seen="2026-01-01T00:00:00Z")  # fmt: skip
    return group


def dispatched(out) -> str:
    assert out.returncode == 0, out.stderr
    return ID_LINE.search(out.stdout).group(1)


def test_300_hosts_warned_grouped_listed_and_the_failed_rerun(manage, fleet_of_300):
    command = fails_on(AGENTS[3], then="echo same")

    run = manage("run", command, "--group", "scale", "--reach-timeout", "3", "--yes")

    job_id = dispatched(run)
    # Said at dispatch, not after the reach timeout: which targets cannot answer.
    assert "warning: 10 target(s) offline" in run.stderr and "127.0.3.37-46" in run.stderr
    assert "warning: 286 target(s) never seen" in run.stderr
    assert "127.0.2.1-250, 127.0.3.1-36" in run.stderr
    check = manage("check_task", job_id[:8], "--wait", "--wait-timeout", "90")
    assert check.returncode == 1, check.stderr
    lines = check.stdout.splitlines()
    assert lines[0] == f"job {job_id}: {command!r} on 300 host(s): 3 ok, 1 failed, 296 unreachable"
    assert [line for line in lines if line.startswith("from ")] == [
        lines[1],  # the odd one first: its own block, its duration said
        "from 3 hosts: 127.0.1.71-73  (ok, exit 0)",
        "from 296 hosts: 127.0.2.1-250, 127.0.3.1-46  (unreachable)",
    ]
    assert lines[1].startswith("from host 127.0.1.74  (failed, exit 1, ")
    assert "same" in check.stdout and "the agent for <host> running?" in check.stdout
    assert len(lines) < 15, check.stdout

    failed = manage("check_task", job_id, "--failed", "--hosts-only")
    assert failed.stdout == ",".join(["127.0.1.74", *SILENT]) + "\n"

    again = manage("rerun", job_id[:8], "--failed", "--yes")

    rerun_id = dispatched(again)
    assert "warning: 286 target(s) never seen" in again.stderr
    rerun = Job.objects.get(pk=rerun_id)
    assert rerun.command == command and rerun.reach_timeout == 3
    assert numeric(HostTask.objects.filter(job=rerun).values_list("ip", flat=True)) == numeric(
        ["127.0.1.74", *SILENT]
    )
    only_online = manage("rerun", job_id, "--failed", "--online-only")
    online_id = dispatched(only_online)
    assert "skipped 296 target(s) not online (--online-only)" in only_online.stderr
    assert list(HostTask.objects.filter(job_id=online_id).values_list("ip", flat=True)) == [
        "127.0.1.74"
    ]
    done = manage("check_task", online_id, "--wait", "--wait-timeout", "60", "--json")
    assert done.returncode == 1
    assert [t["state"] for t in json.loads(done.stdout)["tasks"]] == [State.FAILED]


def test_the_api_reruns_the_failed_host_only_and_lists_the_job(manage, fleet_of_300):
    job_id = dispatched(manage("run", fails_on(AGENTS[3], then="echo same"), "--hosts",
                               *AGENTS, "127.0.2.7", "--reach-timeout", "2"))  # fmt: skip
    manage("check_task", job_id, "--wait", "--wait-timeout", "60")
    api = token_client(make_user(superuser=True))

    failed = api.get(f"/api/jobs/{job_id}/tasks/", {"failed": "true"}).json()
    answer = api.post(f"/api/jobs/{job_id}/rerun/", {"states": ["failed"]}, format="json")
    listed = manage("jobs", "--failed", "--limit", "3")

    assert [t["host"] for t in failed["results"]] == ["127.0.1.74", "127.0.2.7"]
    assert answer.status_code == 202, answer.content
    assert [t["host"] for t in answer.json()["tasks"]] == ["127.0.1.74"]
    assert job_id[:8] in listed.stdout and "FAILED" in listed.stdout
    refused = api.post(f"/api/jobs/{job_id}/rerun/", {"states": ["timeout"]}, format="json")
    assert refused.status_code == 400 and "nothing to re-run" in json.dumps(refused.json())
    # The dispatch answer names the targets that will not answer, as the CLI warns of them.
    warned = api.post("/api/jobs/", {"command": "true", "hosts": ["127.0.2.9", AGENTS[0]],
                                     "reach_timeout": 2}, format="json").json()  # fmt: skip
    assert warned["not_answering"] == {"skipped": [], "offline": [], "never_seen": ["127.0.2.9"]}
    none = api.post("/api/jobs/", {"command": "true", "hosts": ["127.0.2.9"],
                                   "online_only": True}, format="json")  # fmt: skip
    assert none.status_code == 400 and "no target's agent is online" in json.dumps(none.json())


def test_all_with_online_only_reaches_the_online_agents_and_no_silent_host(manage, fleet_of_300):
    out = manage("collect", "--all", "--online-only", "--yes")

    job_id = dispatched(out)
    ips = set(HostTask.objects.filter(job_id=job_id).values_list("ip", flat=True))
    assert set(AGENTS) <= ips and not ips & set(SILENT)
    assert "skipped 296 target(s) not online" in out.stderr
    none = manage("run", "true", "--hosts", "127.0.2.5", "--online-only")
    assert none.returncode == 2 and "no target's agent is online now" in none.stderr
