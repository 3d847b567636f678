"""The CLI acts as a named user of the server (--as USER, or CMDB_USER), never as $USER: their
permissions and grants apply to every command, and the audit trail names them."""

import pytest

from cmdb.access import services
from cmdb.audit.models import AuditEntry
from cmdb.hosts.models import HostGroup
from cmdb.jobs.models import Job
from tests.support.api import make_group, make_user
from tests.support.cli import ID_LINE, wait_job
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

A, B = AGENT_IPS
RUNNER = ("jobs.run_command", "jobs.view_job", "jobs.view_hosttask", "jobs.view_output")


@pytest.fixture
def teams(fleet):
    """Host A in group web (alice's: run, view), host B in group db (nobody's)."""
    web, db = make_host(A), make_host(B)
    make_group("web", web)
    make_group("db", db)
    make_user(*RUNNER, "jobs.cancel_job", username="alice", everywhere=False)
    services.add("alice", ["run", "view"], ["web"])


def test_without_a_named_user_the_cli_refuses_and_says_how(manage, tmp_path, teams):
    # $USER names a superuser here: it counts for nothing.
    nobody = {"CMDB_USER": "", "USER": "cli-tester", "CMDB_RUN_DIR": str(tmp_path)}
    out = manage("run", "true", "--hosts", A, env=nobody)
    assert out.returncode == 2, out.stdout
    assert "say who you are: --as USER or CMDB_USER=USER" in out.stderr
    out = manage("run", "true", "--hosts", A, "--as", "nosuch")
    assert out.returncode == 2
    assert out.stderr.strip() == ("CommandError: no user 'nosuch' on this server "
                                  "(--as / CMDB_USER); nothing done")  # fmt: skip
    gone = make_user(username="gone")
    gone.is_active = False
    gone.save()
    out = manage("hosts", "--as", "gone")
    assert out.returncode == 2 and "user 'gone' is inactive" in out.stderr
    assert not Job.objects.exists()


def test_a_user_runs_where_granted_is_refused_elsewhere_and_is_named(manage, teams):
    out = manage("run", "echo nope", "--hosts", A, B, "--as", "alice")
    assert out.returncode == 2, out.stdout
    assert f"alice may not run on {B}: no grant of theirs covers it" in out.stderr
    assert not Job.objects.exists()
    entry = AuditEntry.objects.get(action="refused")
    assert (entry.username, entry.via, entry.command) == ("alice", "cli", "echo nope")

    # CMDB_USER works as --as does.
    out = manage("run", "echo yes", "--hosts", A, env={"CMDB_USER": "alice"})
    assert out.returncode == 0, out.stderr
    job_id = ID_LINE.search(out.stdout).group(1)
    doc, code = wait_job(manage, job_id)
    assert code == 0 and doc["summary"] == {"ok": 1}
    assert Job.objects.get(pk=job_id).requested_by == "alice"
    entry = AuditEntry.objects.get(action="dispatch")
    assert (entry.username, entry.via, entry.targets_resolved) == ("alice", "cli", [A])


def test_the_kind_of_job_needs_its_permission_too(manage, teams):
    make_user("jobs.view_job", username="viewer", everywhere=True)
    out = manage("run", "true", "--hosts", A, "--as", "viewer")
    assert out.returncode == 2
    assert "viewer may not run at all (needs the permission jobs.run_command)" in out.stderr
    out = manage("collect", "--hosts", A, "--as", "viewer")
    assert "needs the permission jobs.collect_facts" in out.stderr
    assert not Job.objects.exists()


def test_lists_show_only_what_the_user_may_view(manage, teams):
    hosts = manage("hosts", "--as", "alice")
    assert A in hosts.stdout and B not in hosts.stdout
    # --as after a sub-command too.
    groups = manage("groups", "list", "--as", "alice")
    assert groups.returncode == 0, groups.stderr
    lines = dict(line.split(None, 1) if " " in line.strip() else (line.strip(), "")
                 for line in groups.stdout.splitlines())  # fmt: skip
    assert lines["web"].strip() == A and lines["db"].strip() == ""
    facts = manage("facts", B, "--as", "alice")
    assert facts.returncode == 2 and "unknown" in facts.stderr


def test_group_membership_and_keys_need_their_own_permission(manage, teams):
    out = manage("groups", "add", "web", B, "--as", "alice")
    assert out.returncode == 2
    assert "alice may not change which hosts are in a group" in out.stderr
    assert "hosts.change_hostgroup_members" in out.stderr
    assert list(HostGroup.objects.get(name="web").hosts.values_list("ip", flat=True)) == [A]

    out = manage("keys", "reject", A, "--as", "alice")
    assert out.returncode == 2 and "needs the permission hosts.manage_keys" in out.stderr
    refused = AuditEntry.objects.get(action="key.reject")
    assert (refused.username, refused.outcome) == ("alice", "refused")

    # With the permission, the change is made and audited as theirs.
    make_user("hosts.change_hostgroup_members", "hosts.view_host", username="netops")
    out = manage("groups", "add", "web", B, "--as", "netops")
    assert out.returncode == 0, out.stderr
    entry = AuditEntry.objects.get(action="group.change", username="netops")
    assert (entry.username, entry.via, entry.detail) == (
        "netops", "cli", {"group": "web", "added": [B]})  # fmt: skip


def test_cancel_needs_a_cancel_grant_except_on_ones_own_jobs(manage, teams):
    make_user(*RUNNER, username="bob", everywhere=False)
    services.add("bob", ["run", "view"], ["web"])
    out = manage("run", "sleep 30", "--hosts", A, "--as", "alice")
    job_id = ID_LINE.search(out.stdout).group(1)
    # bob may not cancel (no permission, no cancel grant); alice may stop her own.
    out = manage("cancel", job_id, "--as", "bob")
    assert out.returncode == 2
    assert "bob may not cancel at all (needs the permission jobs.cancel_job)" in out.stderr
    assert f"bob may not cancel on {A}" in out.stderr
    out = manage("cancel", job_id, "--as", "alice")
    assert out.returncode == 0, out.stderr
    doc, _ = wait_job(manage, job_id)
    assert doc["summary"] == {"cancelled": 1}
    assert list(AuditEntry.objects.filter(action="cancel").order_by("seq").values_list(
        "username", "outcome")) == [("bob", "refused"), ("alice", "ok")]  # fmt: skip
