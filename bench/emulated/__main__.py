"""`python -m bench.emulated`: the EMULATED fleet alone (`make bench` runs it too), on a Redis,
a central worker and a SQLite database of its own. BENCH_EMULATED_SIZES=1000,10000,50000.

Writes bench/out/emulated.json and prints its tables.
"""

import json
import os
import shutil
import subprocess
import sys

from bench.topology import ROOT, BenchFleet, interrupt_on_signals

OUT = ROOT / "bench" / "out"
SIZES = [int(n) for n in os.environ.get("BENCH_EMULATED_SIZES", "1000,10000").split(",")]


def main() -> None:
    interrupt_on_signals()
    run_dir = OUT / "emulated-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    fleet = BenchFleet(run_dir, [], [])
    os.environ.update({k: v for k, v in fleet.env.items()
                       if k.startswith(("CMDB_", "REDIS_", "DATABASE_", "DJANGO_"))})  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=fleet.env,
                   check=True)  # fmt: skip
    import django

    django.setup()
    from bench.emulated import fleet as emulated
    from cmdb.celery import app

    try:
        fleet.start_redis()
        fleet.start_central()
        report = emulated.measure_emulated(app, fleet, SIZES)
    finally:
        fleet.stop_all()
    OUT.mkdir(exist_ok=True)
    (OUT / "emulated.json").write_text(json.dumps(report, indent=2))
    print(emulated.markdown(report))


if __name__ == "__main__":
    main()
