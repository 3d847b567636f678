"""`make bench`: our whole path against the raw Celery floor, in one run, on this machine.

Writes bench/out/results.md and bench/out/results.json; bench/out/ is not committed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.topology import BenchFleet, host_ips, interrupt_on_signals, wait_for_nodes

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "1,10,50,200,1000").split(",")]
REPS = {1: 7, 10: 7, 50: 5, 200: 5, 1000: 3}
PER_HOST_SIZES = [n for n in SIZES if n <= 10]
EMULATED_SIZES = [int(n) for n in os.environ.get("BENCH_EMULATED_SIZES",
                                                 "1000,10000,50000").split(",") if n]  # fmt: skip


def main() -> None:
    # Ctrl-C and SIGTERM (a CI timeout, `kill`) both end in the finally below, which stops
    # every process this run started.
    interrupt_on_signals()
    shutil.rmtree(OUT / "run", ignore_errors=True)
    (OUT / "run").mkdir(parents=True)
    shared, per_host = host_ips("3", max(SIZES)), host_ips("4", max(PER_HOST_SIZES or [0]))
    fleet = BenchFleet(OUT / "run", shared, per_host)
    # The user the timed CLI commands act as (made below, in the bench's own database).
    fleet.env["CMDB_USER"] = "bench"
    os.environ.update(
        {
            k: v
            for k, v in fleet.env.items()
            if k.startswith(("CMDB_", "REDIS_", "DATABASE_", "FLOOR_", "DJANGO_"))
        }
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=fleet.env, check=True
    )
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from bench import measure
    from bench.floor import app as floor_app
    from cmdb.celery import app

    get_user_model().objects.create_superuser("bench", "bench@localhost", None)
    measure.create_hosts(shared, "agent@shared")
    for ip in per_host:
        measure.create_hosts([ip], f"agent@{ip}")
    try:
        print(f"starting redis, central worker, agents and floor workers in {fleet.run_dir}")
        nodes = fleet.start_everything()
        wait_for_nodes([app, floor_app], nodes)
        measure.wait_accepted([*shared, *per_host])
        report = run_all(app, floor_app, fleet, shared, per_host, measure)
    finally:
        fleet.stop_all()
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(report, indent=2))
    from bench.agents import markdown as agents_markdown
    from bench.central import markdown as central_markdown
    from bench.emulated.fleet import markdown as emulated_markdown
    from bench.pages import markdown as pages_markdown

    table = "\n".join([measure.markdown(report), emulated_markdown(report["emulated"]),
                       central_markdown(report["central"]), pages_markdown(report["pages"]),
                       agents_markdown(report["agents"])])  # fmt: skip
    (OUT / "results.md").write_text(table)
    print(table)
    print(f"written: {OUT / 'results.json'}, {OUT / 'results.md'}")


def run_all(app, floor_app, fleet, shared, per_host, measure) -> dict:
    from bench import central, pages
    from bench.emulated import fleet as emulated

    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "fanout": {},
        "fanout_per_host": {},
    }
    measure.fanout_ours(app, shared[:10])  # warm both paths (imports, connections, pools)
    measure.fanout_floor(floor_app, shared[:10])
    for size in SIZES:
        report["fanout"][str(size)] = measure.compare(
            app, floor_app, shared[:size], REPS.get(size, 3), topology="one agent process"
        )
        print(f"fan-out {size}: {report['fanout'][str(size)]['ratio']:.2f}x the floor")
    for size in PER_HOST_SIZES:
        report["fanout_per_host"][str(size)] = measure.compare(
            app, floor_app, per_host[:size], REPS.get(size, 3), topology="one agent per host"
        )
        print(
            f"fan-out {size} (agent per host): "
            f"{report['fanout_per_host'][str(size)]['ratio']:.2f}x the floor"
        )
    report["cli"] = measure.cli_times(fleet.env, shared[: min(200, len(shared))], app)
    report["store_rate"] = measure.store_rate(app, count=int(os.environ.get("BENCH_BURST", 10000)))
    if per_host:
        report["agent_memory"] = measure.agent_memory(app, fleet, per_host[0])
        report["collection"] = measure.collection_cost(app, per_host)
    # One job to 1,000, 10,000 and 50,000 EMULATED hosts (bench.emulated), on this fleet's
    # Redis and central worker.
    report["emulated"] = emulated.measure_emulated(app, fleet, EMULATED_SIZES)
    # Past one central worker: two storing one burst on PostgreSQL (bench.central, its own
    # cluster and Redis, in a process of its own).
    report["central"] = central.measure_central(count=int(os.environ.get("BENCH_BURST", 10000)))
    # Pages and check_task at 10,000 hosts, in this bench's database (127.20.x.y).
    report["pages"] = pages.measure_pages()
    # 100 real agents, idle, one per host: in a process of its own (its own Redis 7 and
    # database; it sets Django up for them).
    report["agents"] = _agents()
    report["targets"] = measure.targets(report)
    return report


def _agents() -> dict:
    with tempfile.TemporaryDirectory(prefix="cmdb-agents-out-") as folder:
        out = Path(folder) / "agents.json"
        subprocess.run([sys.executable, "-m", "bench.agents", "--count",
                        os.environ.get("BENCH_AGENTS", "100"), "--out", str(out)],
                       cwd=ROOT, check=True)  # fmt: skip
        return json.loads(out.read_text())


if __name__ == "__main__":
    main()
