"""Fact collection through real agents into the CMDB, and targeting by stored facts."""

import json

import pytest

from cmdb.assets.models import Asset, Change, HostFacts
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from tests.support.cli import ID_LINE, wait_job
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hosts(fleet):
    return [make_host(ip) for ip in AGENT_IPS]


def collect(manage, *args) -> dict:
    out = manage("collect", *args)
    assert out.returncode == 0, out.stderr
    data, code = wait_job(manage, ID_LINE.search(out.stdout).group(1))
    assert code == 0, data
    return data


def test_collect_stores_this_machines_facts_and_history(manage, hosts):
    data = collect(manage, "--hosts", AGENT_IPS[0])

    assert data["kind"] == "collect"
    assert data["tasks"][0]["stdout"]["head"].startswith("collected cpu, disks")
    host = hosts[0]
    kinds = set(Asset.objects.filter(host=host).values_list("kind", flat=True))
    assert {"system", "cpu", "memory", "mount", "nic"} <= kinds
    assert HostFacts.objects.get(host=host).os  # this machine's os-release id
    assert [c.action for c in Change.objects.filter(host=host)] == ["discovered"]

    collect(manage, "--hosts", AGENT_IPS[0])  # the same machine again: no history
    assert Change.objects.filter(host=host).count() == 1

    facts = manage("facts", AGENT_IPS[0])
    assert facts.returncode == 0 and "cpu" in facts.stdout and "system" in facts.stdout
    assert json.loads(manage("facts", AGENT_IPS[0], "--json").stdout)["assets"]
    assert "discovered" in manage("changes", AGENT_IPS[0], "--since", "1h").stdout


def test_where_targets_only_hosts_whose_stored_facts_match(manage, hosts):
    collect(manage, "--hosts", AGENT_IPS[0])
    os_id = HostFacts.objects.get(host=hosts[0]).os

    out = manage("run", "echo picked", "--where", f"os={os_id}")

    assert out.returncode == 0, out.stderr
    job_id = ID_LINE.search(out.stdout).group(1)
    # Only the host with collected facts matches (the other has none yet).
    assert list(HostTask.objects.filter(job_id=job_id).values_list("ip", flat=True)) == [
        AGENT_IPS[0]
    ]
    refused = manage("run", "echo", "--where", "os=plan9")
    assert refused.returncode == 2 and "no host matches" in refused.stderr


def test_groups_target_their_members(manage, hosts):
    assert manage("groups", "add", "web", *AGENT_IPS).returncode == 0

    out = manage("run", "true", "--group", "web")

    job_id = ID_LINE.search(out.stdout).group(1)
    assert sorted(HostTask.objects.filter(job_id=job_id).values_list("ip", flat=True)) == sorted(
        AGENT_IPS
    )
    assert manage("run", "true", "--group", "nope").returncode == 2


def test_an_agent_that_starts_has_its_facts_collected(fleet):
    from cmdb.celery import app
    from tests.support.fleet import ping_nodes, wait_for

    ip = "127.0.1.51"
    agent = fleet.start_agent(ip, concurrency=1)
    try:
        wait_for(lambda: ping_nodes(app, [f"agent@{ip}"]), 60, "the new agent", interval=0.5)

        def collected():
            return HostTask.objects.filter(
                ip=ip, state=State.OK, job__requested_by=f"agent start (agent@{ip})"
            ).exists()

        wait_for(collected, 60, "the start-up collection", interval=0.3)
        assert Asset.objects.filter(host__ip=ip, kind="system").exists()
    finally:
        fleet.stop(f"agent-{ip}")
        agent.wait(timeout=30)
