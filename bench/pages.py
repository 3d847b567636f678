"""`python -m bench.pages`: server time of the pages and commands a 10,000-host fleet uses.

Makes BENCH_PAGES_HOSTS hosts (127.20.x.y; nothing is contacted) each with a facts report of
this machine's (collectors.collect(), varied per host) stored as the server stores one, a few
host groups, and a finished job on every host with its results, TaskResults and audit entry.
Then, in-process (django.test.Client, time around the request; check_task through
call_command into a StringIO), the median of several rounds of each page as a superuser and as
a user granted one group of 2,000 hosts, with the SQL queries each makes.

``measure_pages()`` is for a caller that has set Django up (the main bench, on its database);
run as a module, it makes a throwaway SQLite database under bench/out/pages/ and writes
bench/out/pages.json (or, given BENCH_PAGES_DATABASE_URL, an empty database to fill, such as
PostgreSQL's: bench/out/pages-postgresql.json).
"""

import contextlib
import io
import json
import os
import random
import shutil
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
HOSTS = int(os.environ.get("BENCH_PAGES_HOSTS", "10000"))
ROUNDS = int(os.environ.get("BENCH_PAGES_ROUNDS", "5"))
#: The restricted user's grant: one host group of this many hosts.
GRANTED = min(2000, HOSTS)
#: Server time each page should stay under, at 10,000 hosts.
BUDGET_MS = 300
SUPERUSER, RESTRICTED = "bench-pages-admin", "bench-pages-viewer"
#: What a read-only operator is given (as tests.support.api.VIEW_ALL), plus the admin.
VIEW_PERMISSIONS = ["hosts.view_host", "hosts.view_hostgroup", "assets.view_asset",
                    "assets.view_change", "jobs.view_job", "jobs.view_hosttask",
                    "jobs.view_output"]  # fmt: skip
OS_MIX = [("debian", "12", "Debian GNU/Linux"), ("ubuntu", "22.04", "Ubuntu"),
          ("rocky", "9.3", "Rocky Linux")]  # fmt: skip


def host_ip(i: int) -> str:
    return f"127.20.{i // 250}.{i % 250 + 1}"


def _varied(base: dict, i: int, ip: str, rng: random.Random) -> dict:
    """This machine's report as host ``i``'s: its name, OS, memory, free space, MACs, IP."""
    report = json.loads(json.dumps(base))
    report["collected_at"] = time.time() - rng.uniform(0, 3600)
    facts = report["facts"]
    name = f"node{i:05d}"
    os_id, version, os_name = OS_MIX[0 if i % 10 < 7 else 1 if i % 10 < 9 else 2]
    if "system" in facts:
        facts["system"].update(hostname=name, fqdn=f"{name}.fleet.example", os_id=os_id,
                               os_version=version, os_name=os_name,
                               os_pretty=f"{os_name} {version}")  # fmt: skip
    if "memory" in facts:
        facts["memory"]["total_bytes"] = rng.choice([16, 32, 64, 128, 256]) * 2**30
    for mount in (facts.get("disks") or {}).get("mounts") or []:
        if mount.get("size_bytes"):
            mount["free_bytes"] = int(mount["size_bytes"] * rng.uniform(0.02, 0.9))
            mount["used_bytes"] = mount["size_bytes"] - mount["free_bytes"]
            mount["used_pct"] = round(100 * mount["used_bytes"] / mount["size_bytes"], 1)
    for n, nic in enumerate((facts.get("network") or {}).get("interfaces") or []):
        octets = (n, i >> 16 & 255, i >> 8 & 255, i & 255, rng.randrange(256))
        nic["mac"] = "02:" + ":".join(f"{o:02x}" for o in octets)
        if nic.get("ipv4"):
            nic["ipv4"], nic["ipv6"] = [f"{ip}/16"], []
    if "hardware" in facts:
        facts["hardware"]["serial"] = f"SN{i:08d}"
    return report


def build(hosts: int = HOSTS) -> dict:
    """The fleet, its groups, the two users and the finished job; returns what the pages need."""
    from django.contrib.auth.models import Permission, User
    from django.db import transaction
    from django.utils import timezone

    import collectors
    from cmdb import audit
    from cmdb.access import services as grant_services
    from cmdb.access.actor import Actor
    from cmdb.assets.store import store_report
    from cmdb.hosts.choices import AgentStatusChoices, KeyStateChoices
    from cmdb.hosts.models import Host, HostGroup
    from cmdb.jobs import records
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.models import HostTask, Job

    rng = random.Random(17)
    base = collectors.collect()
    now = timezone.now()
    ips = [host_ip(i) for i in range(hosts)]
    with transaction.atomic():
        Host.objects.bulk_create(
            [Host(ip=ip, hostname=f"node{i:05d}", agent_name=f"agent@{ip}", agent_pid=1000 + i,
                  key_state=KeyStateChoices.ACCEPTED, key_fingerprint=uuid.uuid4().hex,
                  agent_status=AgentStatusChoices.OFFLINE if i % 50 == 0
                  else AgentStatusChoices.ONLINE, last_seen=now - timedelta(seconds=i % 60))
             for i, ip in enumerate(ips)],
            batch_size=500,
        )  # fmt: skip
        by_ip = {h.ip: h for h in Host.objects.filter(ip__in=ips)}
        started = time.perf_counter()
        for i, ip in enumerate(ips):
            store_report(by_ip[ip], _varied(base, i, ip, rng))
        stored_s = time.perf_counter() - started
        members = {"web": ips[:GRANTED], "db": ips[GRANTED:GRANTED + hosts // 10],
                   "cache": ips[-hosts // 20:], "canary": ips[: max(1, hosts // 100)]}  # fmt: skip
        for name, group_ips in members.items():
            group = HostGroup.objects.create(name=name, description=f"the {name} hosts")
            group.hosts.add(*(by_ip[ip] for ip in group_ips))

    admin = User.objects.create_superuser(SUPERUSER, f"{SUPERUSER}@localhost", None)
    viewer = User.objects.create_user(RESTRICTED, is_staff=True)
    for perm in VIEW_PERMISSIONS:
        app_label, codename = perm.split(".")
        viewer.user_permissions.add(Permission.objects.get(content_type__app_label=app_label,
                                                           codename=codename))  # fmt: skip
    grant_services.add(RESTRICTED, ["view"], ["web"])

    job = _finished_job(Job, HostTask, State, records, by_ip, ips, now, rng)
    audit.record(Actor(admin, "cli"), "dispatch", kind="command", command=job.command,
                 targets_given={"hosts": ips}, targets_resolved=ips, job=job)  # fmt: skip
    return {"job": str(job.pk), "hosts": hosts, "store_report_ms": round(stored_s / hosts * 1e3, 2)}


def _finished_job(Job, HostTask, State, records, by_ip, ips, now, rng):
    """A command on every host, ended: mostly ok, some failed, a few timed out or unreachable,
    each with a few lines of output; its host tasks and TaskResults as the server writes them
    (cmdb.jobs.records.write)."""
    from django.db import transaction

    job = Job.objects.create(command="uptime; df -h /", timeout=60, reach_timeout=30,
                             requested_by=SUPERUSER, created=now - timedelta(minutes=5),
                             dispatched_at=now - timedelta(minutes=5))  # fmt: skip
    tasks = HostTask.objects.bulk_create(
        [HostTask(job=job, host=by_ip[ip], ip=ip, task_id=str(uuid.uuid4()),
                  reach_deadline=now - timedelta(minutes=4)) for ip in ips],
        batch_size=500,
    )  # fmt: skip
    changed = {}
    for i, task in enumerate(tasks):
        roll = rng.random()
        state = (State.OK if roll < 0.93 else State.FAILED if roll < 0.98
                 else State.TIMEOUT if roll < 0.99 else State.UNREACHABLE)  # fmt: skip
        started = now - timedelta(minutes=5) + timedelta(seconds=rng.uniform(0, 2))
        task.state, task.agent, task.agent_pid = state, f"agent@{task.ip}", 1000 + i
        if state == State.UNREACHABLE:
            task.error = "no agent took the task within 30 s"
            task.finished_at = started + timedelta(seconds=30)
        else:
            task.duration = round(rng.uniform(0.01, 0.4), 3)
            task.started_at, task.finished_at = started, started + timedelta(seconds=task.duration)
            used = rng.randrange(5, 98)
            out = (f" 12:{i % 60:02d}:01 up {i % 300} days,  2 users,  load average: "
                   f"{rng.uniform(0, 4):.2f}, 0.52, 0.40\n"
                   "Filesystem      Size  Used Avail Use% Mounted on\n"
                   f"/dev/vda1       251G  {used * 2}G  {251 - used * 2}G  {used}% /\n"
                   )  # fmt: skip
            task.stdout_head, task.stdout_bytes = out, len(out.encode())
            if state == State.FAILED:
                task.exit_code = 1
                err = "df: /: Input/output error\n"
                task.stderr_head, task.stderr_bytes = err, len(err.encode())
            elif state == State.TIMEOUT:
                task.error = "killed after 60 s"
            else:
                task.exit_code = 0
        payload = {"task_id": task.task_id, "outcome": state, "host": task.ip,
                   "agent": task.agent, "agent_pid": task.agent_pid,
                   "exit_code": task.exit_code, "duration": task.duration, "error": task.error,
                   "stdout": task.stream("stdout"), "stderr": task.stream("stderr")}  # fmt: skip
        changed[task.task_id] = (task, payload)
    with transaction.atomic():
        items = list(changed.items())
        for start in range(0, len(items), 1000):
            records.write(dict(items[start : start + 1000]))
    return job


def _timed(fn, rounds: int) -> dict:
    """Wall time (the server time asked for) and this process' CPU time, which another
    process' load on the machine inflates less."""
    runs, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - started_cpu) * 1e3)
    return {"median": round(statistics.median(runs), 1), "min": round(min(runs), 1),
            "max": round(max(runs), 1), "runs": rounds,
            "cpu_median": round(statistics.median(cpu), 1)}  # fmt: skip


def _first_host() -> int:
    from cmdb.hosts.models import Host

    return Host.objects.order_by("pk").values_list("pk", flat=True).first()


def _pages(job: str) -> dict:
    """Each page: name -> (kind, what): a URL for the client, or check_task's arguments."""
    from django.urls import NoReverseMatch, reverse

    pages = {
        "api_hosts": ("get", "/api/hosts/"),
        "api_hosts_limit_1000": ("get", "/api/hosts/?limit=1000"),
        "api_job": ("get", f"/api/jobs/{job}/"),
        "api_host_tasks_of_job": ("get", f"/api/host-tasks/?job={job}"),
    }
    with contextlib.suppress(NoReverseMatch):  # the job's own paginated host tasks, if any
        pages["api_job_tasks"] = ("get", reverse("api:job-tasks", kwargs={"pk": job}))
    pages.update({
        "admin_hosts": ("get", "/admin/hosts/host/"),
        "admin_job": ("get", f"/admin/jobs/job/{job}/change/"),
        "admin_job_host_tasks": ("get", f"/admin/jobs/hosttask/?job={job}"),
        "dashboard": ("get", "/dashboard/"),
        "web_job": ("get", f"/jobs/{job}/"),
        "web_job_failed": ("get", f"/jobs/{job}/?state=failed"),
        "web_job_hosts": ("get", f"/jobs/{job}/?view=hosts"),
        "web_fleet": ("get", "/fleet/"),
        "web_fleet_where": ("get", "/fleet/?where=memory_gb%3E%3D64"),
        "web_host": ("get", f"/hosts/{_first_host()}/"),
        "web_run_count": ("get", "/run/count/?groups=web&where=os%3Ddebian"),
        "check_task": ("command", [job]),
        "check_task_json": ("command", [job, "--json"]),
    })  # fmt: skip
    return pages


def _runner(kind: str, what, user, client):
    from django.core.management import call_command

    if kind == "get":

        def get():
            response = client.get(what)
            assert response.status_code == 200, (what, response.status_code)
            if not response.streaming:
                assert response.content

        return get

    def command():
        out = io.StringIO()
        try:
            call_command("check_task", *what, "--as", user.get_username(), stdout=out)
        except SystemExit as exc:  # 1: finished with failures, as this job has
            assert exc.code in (0, 1), exc.code
        assert out.getvalue()

    return command


def measure(job: str, rounds: int = ROUNDS) -> dict:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client

    pages = {}
    users = {"superuser": User.objects.get(username=SUPERUSER),
             "restricted": User.objects.get(username=RESTRICTED)}  # fmt: skip
    clients = {}
    for who, user in users.items():
        clients[who] = Client()
        clients[who].force_login(user)
    for name, (kind, what) in _pages(job).items():
        row = {}
        for who, user in users.items():
            run = _runner(kind, what, user, clients[who])
            queries = []

            def counted(execute, sql, *args, queries=queries):
                queries.append(sql)
                return execute(sql, *args)

            # Not CaptureQueriesContext: a request's start clears the log it reads.
            with connection.execute_wrapper(counted):
                run()  # warm: imports, templates, the URLconf
            row[f"{who}_ms"] = _timed(run, rounds)
            row["queries" if who == "superuser" else "restricted_queries"] = len(queries)
        pages[name] = row
        print(f"  {name}: {row['superuser_ms']['median']} ms / {row['restricted_ms']['median']} ms"
              f" (CPU {row['superuser_ms']['cpu_median']} / {row['restricted_ms']['cpu_median']})",
              flush=True)  # fmt: skip
    return pages


def measure_pages() -> dict:
    """Make the fleet in the current database, then measure every page (Django set up)."""
    from django.test.utils import override_settings

    started = time.perf_counter()
    made = build(HOSTS)
    print(f"made {HOSTS} hosts and a job of {HOSTS} host tasks in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    # The test client's host, and no password hashing in force_login's way.
    load = " ".join(f"{n:.1f}" for n in os.getloadavg())
    with override_settings(ALLOWED_HOSTS=["testserver", "localhost"], DEBUG=False):
        pages = measure(made["job"])
    return {"hosts": HOSTS, "rounds": ROUNDS, "budget_ms": BUDGET_MS, "load": load,
            "store_report_ms_per_host": made["store_report_ms"], "pages": pages}  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        f"Server time per page at {report['hosts']} hosts (median of {report['rounds']} rounds; "
        f"restricted: a grant on one group of {GRANTED} hosts; load average before: "
        f"{report.get('load', '?')})",
        "",
        "| page | superuser ms | restricted ms | CPU ms (superuser / restricted) | queries "
        f"(superuser / restricted) | under {report['budget_ms']} ms |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in report["pages"].items():
        worst = max(row["superuser_ms"]["median"], row["restricted_ms"]["median"])
        lines.append(f"| {name} | {row['superuser_ms']['median']} | "
                     f"{row['restricted_ms']['median']} | {row['superuser_ms']['cpu_median']} / "
                     f"{row['restricted_ms']['cpu_median']} | {row['queries']} / "
                     f"{row['restricted_queries']} | "
                     f"{'yes' if worst < report['budget_ms'] else 'NO'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    run_dir = OUT / "pages"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "static").mkdir(parents=True)
    # Before Django reads its settings: a throwaway database of this run's own, or the empty
    # one BENCH_PAGES_DATABASE_URL names (PostgreSQL: `python -m tests.support.postgres sh -c
    # 'BENCH_PAGES_DATABASE_URL=${DATABASE_URL%/cmdb}/postgres python -m bench.pages'`).
    os.environ["CMDB_RUN_DIR"] = str(run_dir)
    given = os.environ.get("BENCH_PAGES_DATABASE_URL")
    os.environ["DATABASE_URL"] = given or f"sqlite:///{run_dir / 'pages.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    report = measure_pages()
    from django.db import connection

    report["cpus"], report["database"] = os.cpu_count(), connection.vendor
    written = OUT / ("pages.json" if connection.vendor == "sqlite" else
                     f"pages-{connection.vendor}.json")  # fmt: skip
    written.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"written: {written}")


if __name__ == "__main__":
    main()
