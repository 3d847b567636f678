"""`python -m bench.audit`: what one audit entry costs (cmdb.audit.record), on this machine.

On a fresh SQLite database of its own (WAL, as the server runs it), in a temp folder: record()
on its own (its own transaction, as a refusal is recorded) and inside a caller's transaction
(as dispatch records within its own); then how fast `audit verify` walks the chain. Median
and min of several rounds. Writes bench/out/audit.json.
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
    actor = Actor(User.objects.create_user("bench"), "api", "192.0.2.1")

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
    print(f"written: {OUT / 'audit.json'}")
    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
