"""Rolling commands and collections from the CLI, through real agents: a canary, batches, a
failure limit, the rest cancelled saying why; and the confirmation a large job needs."""

import json

import pytest

from cmdb.audit.models import AuditEntry
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.cli import ID_LINE, wait_job
from tests.support.factories import make_host
from tests.support.fleet import fails_on, host_aware_agents

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

#: This module's agents (auto-accepted, nobody else's).
IPS = ["127.0.1.31", "127.0.1.32", "127.0.1.33", "127.0.1.34", "127.0.1.35"]


@pytest.fixture(scope="module")
def agents(fleet):
    with host_aware_agents(fleet, IPS) as ips:
        yield ips


@pytest.fixture
def hosts(agents):
    return [make_host(ip) for ip in IPS]


def start(manage, *args, env=None) -> str:
    out = manage(*args, env=env)
    assert out.returncode == 0, out.stderr
    return ID_LINE.search(out.stdout).group(1)


def cli_jobs():
    """The operator's (agents that start collect facts of their own)."""
    return list(Job.objects.filter(requested_by__startswith="cli:"))


def finished(manage, job_id: str) -> dict:
    data, _ = wait_job(manage, job_id, timeout=120)
    return data


def states(data: dict) -> dict:
    return {t["host"]: (t["state"], t["error"]) for t in data["tasks"]}


def test_a_rolling_command_stops_once_too_many_failed_and_cancels_the_rest_saying_why(
    manage, hosts
):
    # Batches: .31 .32 | .33 .34 | .35. One failure is allowed; the second stops the rest.
    job_id = start(manage, "run", fails_on(IPS[0], IPS[2]), "--hosts", *IPS,
                   "--batch", "2", "--max-failures", "1")  # fmt: skip

    data = finished(manage, job_id)

    got = states(data)
    assert [got[ip][0] for ip in IPS] == [State.FAILED, State.OK, State.FAILED, State.OK,
                                          State.CANCELLED]  # fmt: skip
    assert got[IPS[4]][1] == (
        "not started: 2 host(s) failed, more than the 1 allowed (--max-failures 1)"
    )
    tasks = {t.ip: t for t in HostTask.objects.filter(job_id=job_id)}
    assert [tasks[ip].batch for ip in IPS] == [0, 0, 1, 1, 2]
    # Each batch started only once the one before it had ended; the cancelled host never ran.
    assert tasks[IPS[2]].started_at >= max(tasks[ip].finished_at for ip in IPS[:2])
    assert tasks[IPS[4]].started_at is None and tasks[IPS[4]].exit_code is None
    # check_task tells it as it is: how the job went out, and why the last host never ran.
    text = manage("check_task", job_id).stdout
    assert "rolling: batch 2, max failures 1\n" in text
    assert f"from host {IPS[4]}  (cancelled)\n[cancelled] not started: 2 host(s) failed" in text


def test_percentages_are_resolved_against_the_jobs_hosts_and_shown_as_given(manage, hosts):
    # 40% of 5 hosts: batches of 2; 20% of 5: 1 failure allowed (the second stops the rest).
    job_id = start(manage, "run", fails_on(IPS[1], IPS[3]), "--hosts", *IPS,
                   "--batch", "40%", "--max-failures", "20%")  # fmt: skip

    data = finished(manage, job_id)

    assert data["rolling"] == {"canary": None, "batch": {"given": "40%", "hosts": 2},
                               "max_failures": {"given": "20%", "hosts": 1}}  # fmt: skip
    given = {"batch": "40%", "max_failures": "20%"}
    assert Job.objects.get(pk=job_id).params == {"batch": 2, "max_failures": 1, "rollout": given}
    got = states(data)
    assert got[IPS[4]] == (State.CANCELLED, "not started: 2 host(s) failed, more than the 1 "
                           "allowed (--max-failures 20%)")  # fmt: skip
    text = manage("check_task", job_id).stdout
    assert "rolling: batch 40% (2 hosts), max failures 20% (1 host)\n" in text


def test_a_failed_canary_stops_every_other_host_whatever_max_failures_allows(manage, hosts):
    job_id = start(manage, "run", fails_on(IPS[0], then="echo fine"), "--hosts", *IPS,
                   "--canary", "1", "--batch", "2", "--max-failures", "10")  # fmt: skip

    data = finished(manage, job_id)

    got = states(data)
    assert got[IPS[0]][0] == State.FAILED
    for ip in IPS[1:]:
        assert got[ip] == (State.CANCELLED, f"not started: the canary failed on {IPS[0]}: "
                           "failed, exit 1")  # fmt: skip
    assert data["rolling"]["canary"] == 1
    assert [t.batch for t in HostTask.objects.filter(job_id=job_id).order_by("ip")] == [
        0, 1, 1, 2, 2]  # fmt: skip


def test_a_collection_goes_to_its_canary_first_then_in_batches(manage, hosts):
    job_id = start(manage, "collect", "--hosts", *IPS, "--canary", "1", "--batch", "50%")

    data = finished(manage, job_id)

    assert {t["state"] for t in data["tasks"]} == {State.OK}
    tasks = {t.ip: t for t in HostTask.objects.filter(job_id=job_id)}
    # 50% of 5 is 3 a batch after the canary: .31 | .32 .33 .34 | .35
    assert [tasks[ip].batch for ip in IPS] == [0, 1, 1, 1, 2]
    assert min(tasks[ip].started_at for ip in IPS[1:]) >= tasks[IPS[0]].finished_at
    assert data["rolling"]["batch"] == {"given": "50%", "hosts": 3}


def test_wrong_rolling_options_are_refused_each_by_name_and_nothing_is_dispatched(manage, hosts):
    out = manage("run", "true", "--hosts", *IPS, "--batch", "0", "--max-failures", "101%",
                 "--canary", "some")  # fmt: skip

    assert out.returncode == 2, out.stderr
    assert "nothing dispatched:" in out.stderr
    assert "batch must be a number of hosts (1 or more) or a percentage" in out.stderr
    assert "not '0'" in out.stderr and "not '101%'" in out.stderr and "not 'some'" in out.stderr
    out = manage("push", "/etc/hostname", "/tmp/x", "--hosts", *IPS, "--max-failures", "1")
    assert out.returncode == 2 and "max failures needs a batch or a canary too" in out.stderr
    assert not cli_jobs()


def test_above_the_ceiling_the_cli_refuses_saying_how_to_confirm_and_runs_with_yes(manage, hosts):
    small = {"CMDB_CONFIRM_ABOVE": "3"}

    out = manage("run", "echo hi", "--hosts", *IPS, env=small)

    assert out.returncode == 2, out.stderr
    assert (
        "nothing dispatched:\n  this job would reach 5 hosts, more than the 3 allowed without "
        "confirming (CMDB_CONFIRM_ABOVE): check the targets, then confirm with --yes (command "
        'line) or "confirm": true (API)'
    ) in out.stderr
    assert not cli_jobs()
    entry = AuditEntry.objects.get(action="refused")
    assert (entry.via, entry.command) == ("cli", "echo hi")
    assert "more than the 3 allowed without confirming" in entry.detail["reason"][0]
    # Every kind asks, within the ceiling none does.
    for args in (("collect",), ("fetch", "/etc/hostname")):
        out = manage(*args, "--hosts", *IPS, env=small)
        assert out.returncode == 2 and "this job would reach 5 hosts" in out.stderr
    assert manage("run", "true", "--hosts", *IPS[:3], env=small).returncode == 0

    job_id = start(manage, "run", "echo hi", "--hosts", *IPS, "--yes", env=small)

    data = finished(manage, job_id)
    assert {t["state"] for t in data["tasks"]} == {State.OK}
    assert json.loads(manage("check_task", job_id, "--json").stdout)["rolling"] is None
