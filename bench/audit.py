"""`python -m bench.audit`: what one audit entry costs (cmdb.audit.record), on this machine.

On a fresh SQLite database of its own (WAL, as the server runs it), in a temp folder: record()
on its own (its own transaction, as a refusal is recorded) and inside a caller's transaction
(as dispatch records within its own); then how fast `audit verify` walks the chain; then
what grants and the audit add to one dispatch of N hosts (the grant check of every target and
the entry with every resolved IP), beside what recording that dispatch costs anyway (the job
and its host tasks). Median and min of several rounds. Writes bench/out/audit.json.
"""

import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CALLS = int(os.environ.get("BENCH_AUDIT_CALLS", "2000"))
ROUNDS = int(os.environ.get("BENCH_AUDIT_ROUNDS", "7"))
#: A dispatch's worth of targets: the resolved list is most of an entry's size.
HOSTS = int(os.environ.get("BENCH_AUDIT_HOSTS", "10"))
TARGETS = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(HOSTS)]


def per_call_us(fn, calls: int, rounds: int) -> dict:
    runs = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn(calls)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return {"median_us": round(statistics.median(runs), 1), "min_us": round(min(runs), 1),
            "calls": calls, "rounds": rounds}  # fmt: skip


def main() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    # Before Django reads its settings: a database of this run's own, never the checkout's
    # (entries cannot be deleted from it afterwards).
    os.environ["CMDB_RUN_DIR"] = str(run_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import transaction

    from cmdb import audit
    from cmdb.access.actor import Actor
    from cmdb.audit.verify import verify

    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import Permission

    user = User.objects.create_user("bench")
    user.user_permissions.add(Permission.objects.get(codename="run_command"))
    actor = Actor(User.objects.get(pk=user.pk), "api", "192.0.2.1")

    def one(_):
        audit.record(actor, "dispatch", kind="command", command="df -h",
                     targets_given={"hosts": TARGETS}, targets_resolved=TARGETS,
                     job=uuid.uuid4())  # fmt: skip

    def alone(calls):
        for i in range(calls):
            one(i)

    def in_caller_transaction(calls):
        for i in range(calls):
            with transaction.atomic():
                one(i)

    report = {
        "database": "sqlite (WAL, synchronous=NORMAL)",
        "targets_per_entry": len(TARGETS),
        "record": per_call_us(alone, CALLS, ROUNDS),
        "record_in_caller_transaction": per_call_us(in_caller_transaction, CALLS, ROUNDS),
        "cpus": os.cpu_count(),
    }
    started = time.perf_counter()
    verdict = verify()
    elapsed = time.perf_counter() - started
    assert verdict.ok, verdict.broken
    report["verify"] = {"entries": verdict.checked,
                        "entries_per_s": round(verdict.checked / elapsed)}  # fmt: skip
    report["per_dispatch"] = per_dispatch(actor)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "audit.json").write_text(json.dumps(report, indent=2))
    for step in ("record", "record_in_caller_transaction"):
        r = report[step]
        print(f"{step:<29} {r['median_us']:7.1f} us per entry (min {r['min_us']:.1f}, "
              f"{r['calls']} calls x {r['rounds']} rounds, "
              f"{len(TARGETS)} targets each)")  # fmt: skip
    print(
        f"verify: {report['verify']['entries']} entries, "
        f"{report['verify']['entries_per_s']} entries/s"
    )
    for n, r in report["per_dispatch"].items():
        print(f"dispatch to {n:>5} hosts: grant check {r['grant_check_ms']:.2f} ms, audit entry "
              f"{r['audit_entry_ms']:.2f} ms, beside recording the job {r['job_rows_ms']:.2f} "
              f"ms: +{r['added_pct']:.0f}%")  # fmt: skip
    print(f"written: {OUT / 'audit.json'}")
    shutil.rmtree(run_dir, ignore_errors=True)


def _median_ms(fn, rounds: int) -> float:
    runs = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1e3)
    return round(statistics.median(runs), 3)


def per_dispatch(actor) -> dict:
    """For N hosts in a host group the user's grant covers: the checks and the entry a
    dispatch now makes, and the rows it made before them."""
    from cmdb.access.models import Grant
    from cmdb.hosts.models import Host, HostGroup

    report = {}
    for n in DISPATCH_SIZES:
        group = HostGroup.objects.create(name=f"bench-{n}")
        made = Host.objects.bulk_create(Host(ip=f"10.{n % 250}.{i // 250}.{i % 250 + 1}")
                                        for i in range(n))  # fmt: skip
        hosts = list(Host.objects.filter(ip__in=[h.ip for h in made]))
        group.hosts.add(*hosts)
        grant = Grant.objects.create(actions=["run", "view"])
        grant.users.add(actor.user)
        grant.host_groups.add(group)
        report[str(n)] = _dispatch_costs(actor, hosts)
        grant.delete()
    return report


def _dispatch_costs(actor, hosts) -> dict:
    from django.db import transaction

    from cmdb import audit
    from cmdb.access import grants
    from cmdb.jobs.models import HostTask, Job

    ips = [h.ip for h in hosts]

    def check():
        assert not grants.kind_refusal(actor.user, "command")
        assert not grants.refusals(actor.user, "run", hosts)

    def entry():
        with transaction.atomic():
            audit.record(actor, "dispatch", kind="command", command="df -h",
                         targets_given={"hosts": ips}, targets_resolved=ips,
                         job=uuid.uuid4())  # fmt: skip

    def job_rows():
        with transaction.atomic():
            job = Job.objects.create(command="df -h", timeout=60, reach_timeout=60)
            HostTask.objects.bulk_create(
                HostTask(job=job, host=h, ip=h.ip, task_id=str(uuid.uuid4())) for h in hosts
            )

    rounds = max(5, ROUNDS)
    r = {"grant_check_ms": _median_ms(check, rounds),
         "audit_entry_ms": _median_ms(entry, rounds),
         "job_rows_ms": _median_ms(job_rows, rounds)}  # fmt: skip
    added = r["grant_check_ms"] + r["audit_entry_ms"]
    r["added_pct"] = round(100 * added / r["job_rows_ms"], 1)
    return r


#: Dispatch sizes measured (hosts in the granted group).
DISPATCH_SIZES = [int(n) for n in os.environ.get("BENCH_AUDIT_DISPATCH", "10,1000").split(",")]


if __name__ == "__main__":
    main()
