"""Results of a job of a few hundred hosts, read from the database (no fleet): check_task's
tally, groups, filters, host lists and exports; id prefixes; `jobs`; the admin's outcome
column; the API's filters and export; numeric address order on SQLite and PostgreSQL."""

import csv
import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from cmdb.hosts.models import Host
from cmdb.jobs import listing, report
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from tests.support.api import VIEW_ALL, make_job, make_user, token_client

pytestmark = pytest.mark.django_db

#: 300 addresses over two /24s, so that text order and numeric order differ.
IPS = [f"127.0.2.{n}" for n in range(1, 251)] + [f"127.0.3.{n}" for n in range(1, 51)]
FAILED = ["127.0.2.10", "127.0.2.9", "127.0.3.2"]
OK = [f"127.0.2.{n}" for n in range(1, 6)]


def numeric(ips):
    return sorted(ips, key=lambda ip: tuple(int(p) for p in ip.split(".")))


@pytest.fixture
def job():
    # Hosts without rows of their own would do for the output; made here for the admin and
    # the API's numeric order (Host.ip_key).
    Host.objects.bulk_create([Host(ip=ip) for ip in reversed(IPS)])
    job = make_job(*reversed(IPS), state=State.UNREACHABLE, command="echo same")
    tasks = HostTask.objects.filter(job=job)
    tasks.update(
        stdout_head="",
        stdout_bytes=0,
        exit_code=None,
        error="no agent took it within 3 s: is the agent for the host running?",
    )
    tasks.filter(ip__in=OK).update(state=State.OK, exit_code=0, error="", stdout_head="same\n")
    tasks.filter(ip__in=FAILED).update(state=State.FAILED, exit_code=2, error="",
                                       stderr_head="no such file\n")  # fmt: skip
    return job


def check_task(*args) -> tuple[str, int]:
    out = io.StringIO()
    try:
        call_command("check_task", *args, stdout=out, stderr=io.StringIO())
    except SystemExit as exc:
        return out.getvalue(), exc.code
    return out.getvalue(), 0


def test_a_job_of_300_hosts_reads_as_a_tally_and_three_groups(job, cli_user):
    text, code = check_task(str(job.pk))

    lines = text.splitlines()
    assert code == 1  # finished, not all ok
    assert lines[0] == f"job {job.pk}: 'echo same' on 300 host(s): 5 ok, 3 failed, 292 unreachable"
    headers = [line for line in lines if line.startswith("from ")]
    # The odd ones first: the ok group (5) before the 292 unreachable.
    assert headers == ["from 3 hosts: 127.0.2.9-10, 127.0.3.2  (failed, exit 2)",
                       "from 5 hosts: 127.0.2.1-5  (ok, exit 0)",
                       "from 292 hosts: 127.0.2.6-8, 127.0.2.11-250, 127.0.3.1, 127.0.3.3-50  "
                       "(unreachable)"]  # fmt: skip
    assert len(lines) < 12, text  # was 601 lines, a block per host


def test_filters_and_host_lists_ready_to_paste(job, cli_user):
    failed, _ = check_task(str(job.pk), "--failed", "--hosts-only")
    by_state, _ = check_task(str(job.pk), "--hosts-only")
    ok, _ = check_task(str(job.pk), "--state", "ok", "--no-group")

    not_ok = [ip for ip in IPS if ip not in OK]
    assert failed == ",".join(numeric(not_ok)) + "\n"
    assert by_state.splitlines()[:2] == ["ok: " + ",".join(OK),
                                         "failed: 127.0.2.9,127.0.2.10,127.0.3.2"]  # fmt: skip
    blocks = [line for line in ok.splitlines() if line.startswith("from host")]
    assert blocks == [f"from host {ip}  (ok, exit 0, 0.25 s)" for ip in OK]
    assert "300 host(s): 5 ok, 3 failed, 292 unreachable" in ok  # the tally is the whole job's


def test_csv_and_json_lines_export_every_host_in_numeric_order(job, cli_user):
    text, _ = check_task(str(job.pk), "--format", "csv")
    lines, _ = check_task(str(job.pk), "--format", "jsonl", "--state", "failed")

    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["host"] for r in rows] == numeric(IPS)
    assert rows[0]["state"] == "ok" and rows[0]["stdout"] == "same\n"
    failed = [json.loads(line) for line in lines.splitlines()]
    assert [(r["host"], r["exit_code"], r["stderr"]) for r in failed] == [
        ("127.0.2.9", 2, "no such file\n"), ("127.0.2.10", 2, "no such file\n"),
        ("127.0.3.2", 2, "no such file\n")]  # fmt: skip


def test_an_id_prefix_names_a_job_and_an_ambiguous_one_lists_them(cli_user):
    a = make_job("127.0.2.1", id=uuid.UUID("abcd1234-0000-4000-8000-000000000001"))
    b = make_job("127.0.2.1", id=uuid.UUID("abcd1234-1111-4000-8000-000000000002"))

    assert check_task("abcd1234-0")[0].startswith(f"job {a.pk}:")
    assert check_task("ABCD12341")[0].startswith(f"job {b.pk}:")  # case, hyphens: either
    with pytest.raises(CommandError, match="is the start of 2 ids; give more of it") as exc:
        check_task("abcd")
    assert str(a.pk) in str(exc.value) and str(b.pk) in str(exc.value)
    with pytest.raises(CommandError, match="no job or host task has the id 'abc'"):
        check_task("abc")  # too short to be a prefix


def test_the_jobs_command_lists_recent_jobs_with_short_ids_and_outcomes(job, cli_user):
    other = make_job("127.0.2.1", command="uptime", requested_by="bob")
    out = io.StringIO()

    call_command("jobs", stdout=out)
    failed_only = io.StringIO()
    call_command("jobs", "--failed", "--limit", "5", stdout=failed_only)
    by_bob = io.StringIO()
    call_command("jobs", "--user", "bob", "--since", "1h", stdout=by_bob)

    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ID", "KIND", "COMMAND", "BY", "CREATED", "(UTC)", "OUTCOME",
                                "HOSTS"]  # fmt: skip
    assert lines[1].startswith(str(other.pk)[:8] + "  command  uptime") and " ok " in lines[1]
    assert lines[2].startswith(str(job.pk)[:8]) and "FAILED" in lines[2]
    assert lines[2].endswith("5 ok, 3 failed, 292 unreachable")
    assert str(other.pk)[:8] not in failed_only.getvalue()
    assert str(job.pk)[:8] not in by_bob.getvalue() and str(other.pk)[:8] in by_bob.getvalue()
    # Its short id is what check_task takes.
    assert check_task(str(job.pk)[:8])[0].startswith(f"job {job.pk}:")


def test_since_takes_an_age_or_a_date():
    assert listing.since("2026-12-01").isoformat() == "2026-12-01T00:00:00+00:00"
    with pytest.raises(ValueError, match="an age"):
        listing.since("yesterday")


def test_the_api_filters_a_jobs_tasks_by_state_in_numeric_order(job):
    api = token_client(make_user(*VIEW_ALL))

    failed = api.get(f"/api/jobs/{job.pk}/tasks/", {"state": "failed"}).json()
    unreachable = api.get(f"/api/jobs/{job.pk}/tasks/", {"state": "unreachable,ok",
                                                         "limit": 12}).json()  # fmt: skip
    not_ok = api.get(f"/api/jobs/{job.pk}/tasks/", {"failed": "true", "limit": 1}).json()
    wrong = api.get(f"/api/jobs/{job.pk}/tasks/", {"state": "broken"})

    assert [t["host"] for t in failed["results"]] == ["127.0.2.9", "127.0.2.10", "127.0.3.2"]
    first = [f"127.0.2.{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14)]
    assert [t["host"] for t in unreachable["results"]] == first
    assert unreachable["count"] == 297 and not_ok["count"] == 295
    assert wrong.status_code == 400 and "broken" in wrong.json()["state"][0]


def test_the_api_exports_csv_and_json_lines(job):
    api = token_client(make_user(*VIEW_ALL))

    as_csv = api.get(f"/api/jobs/{job.pk}/export/", {"format": "csv"})
    as_jsonl = api.get(f"/api/jobs/{job.pk}/export/", {"format": "jsonl", "failed": "1"})

    assert as_csv.status_code == 200 and as_csv["Content-Type"].startswith("text/csv")
    assert f'filename="job-{job.pk}.csv"' in as_csv["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(as_csv.content.decode())))
    assert [r["host"] for r in rows] == numeric(IPS)
    lines = as_jsonl.content.decode().splitlines()
    assert len(lines) == 295 and json.loads(lines[0])["host"] == "127.0.2.6"
    # No host matched: an empty file, still of its type.
    empty = api.get(f"/api/jobs/{job.pk}/export/", {"format": "jsonl", "state": "lost"})
    assert empty.content == b"" and empty["Content-Type"] == "application/jsonl; charset=utf-8"


def test_the_api_hides_output_from_an_export_without_view_output(job):
    perms = [p for p in VIEW_ALL if p != "jobs.view_output"]
    rows = token_client(make_user(*perms)).get(f"/api/jobs/{job.pk}/export/?format=jsonl")

    first = json.loads(rows.content.decode().splitlines()[0])
    assert first["host"] == "127.0.2.1" and first["stdout"] is None


def test_the_admins_job_list_has_an_outcome_column(job, client):
    client.force_login(make_user(superuser=True))

    text = client.get("/admin/jobs/job/").content.decode()

    assert "5 ok, 3 failed, 292 unreachable" in text and "#cf222e" in text
    hosts = client.get("/admin/hosts/host/?o=1").content.decode()  # by address, as numbers
    assert hosts.index(">127.0.2.9<") < hosts.index(">127.0.2.10<") < hosts.index(">127.0.2.100<")


def test_rows_read_as_values_are_the_rows_of_the_instances(job):
    # The job page and its export read rows as values (report.rows, report.group_rows); they
    # must say what row() of each model instance says, output, late results and times too.
    tasks = HostTask.objects.filter(job=job).order_by("ip_key")
    tasks.filter(ip="127.0.2.7").update(late_state=State.OK, late_at="2026-01-02T03:04:05Z",
                                        started_at="2026-01-02T03:00:00.5Z")  # fmt: skip
    for output in (True, False):
        whole = [report.row(t, output) for t in tasks]
        assert report.rows(tasks, output) == whole
        assert report.group_rows(tasks, output) == [
            {k: r[k] for k in ("ip", "state", "exit_code", "error", "late", "stdout", "stderr")}
            for r in whole
        ]
    late = next(r for r in whole if r["ip"] == "127.0.2.7")
    assert late["late"] == {"state": "ok", "received_at": "2026-01-02 03:04:05 UTC"}
    assert late["started_at"] == "2026-01-02 03:00:00 UTC"
