"""`make faults`: python -m bench.faults [--short] [--runs N] [--only NAME...] [--out FILE]

Starts a fleet of its own under a temporary folder (Redis with an append-only file, the
central worker, agents on 127.14.x.y queues, SQLite), injects each scenario's fault, compares
the commands' markers with what the server recorded, and writes bench/out/faults.json (and the
processes' logs beside it, in faults-logs/). Exit 1 when any scenario lost, ran twice, ran late,
left stuck or ended wrong a task; everything it started is stopped on exit, on an exception
and on SIGINT/SIGTERM.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.faults.harness import FOREIGN, FaultFleet, Watch, log, unmount
from deploy.local import ROOT, interrupt_on_signals, shielded

OUT = ROOT / "bench" / "out"
#: Scenario names, in the order they run (bench.faults.scenarios.SCENARIOS, importable only
#: once Django is set up).
NAMES = ["central_kill", "agent_late", "agent_back_after_sweep", "agent_frozen", "agent_kill",
         "redis_restart", "frozen_broker_dispatch", "spool_full"]  # fmt: skip


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--short", action="store_true", help="each scenario once, smaller bursts")
    parser.add_argument("--runs", type=int, help="runs per scenario (default: 1 short, more full)")
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=", ".join(NAMES))
    parser.add_argument("--out", type=Path, default=OUT / "faults.json")
    parser.add_argument(
        "--keep", action="store_true", help="keep the run folder (its path is printed)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    interrupt_on_signals()
    run_dir = Path(tempfile.mkdtemp(prefix="cmdb-faults-"))
    fleet = FaultFleet(run_dir)
    # The user its `manage.py run` acts as (made below, in the suite's own database).
    fleet.env["CMDB_USER"] = "faults"
    for name in FOREIGN:
        os.environ.pop(name, None)
    os.environ.update({k: v for k, v in fleet.env.items()
                       if k.startswith(("CMDB_", "REDIS_", "DATABASE_", "DJANGO_"))})  # fmt: skip
    names = [n for n in NAMES if not args.only or n in args.only]
    started = time.monotonic()
    tallies, watch, ctx, interrupted = [], None, None, False
    log(f"fault suite ({'short' if args.short else 'full'}): {', '.join(names)}; in {run_dir}")
    try:
        fleet.start_redis()
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT,
                       env=fleet.env, check=True, timeout=300)  # fmt: skip
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        from bench.faults import scenarios
        from bench.faults.tally import Tally
        from cmdb.celery import app

        get_user_model().objects.create_superuser("faults", "faults@localhost", None)
        watch = Watch().start()
        ctx = scenarios.Context(fleet, app, watch, args.short)
        if not ctx.start_central():
            raise RuntimeError(f"the central worker did not answer; see {fleet.logs}")
        for name in names:
            scenario, full_runs = scenarios.SCENARIOS[name]
            runs = args.runs or (1 if args.short else full_runs)
            tally = Tally(name)
            begun = time.monotonic()
            try:
                for run in range(runs):
                    log(f"{name}: run {run + 1}/{runs}")
                    scenario(ctx, tally, run)
                    if tally.skipped:
                        log(f"{name}: skipped: {tally.skipped}")
                        break
                    tally.counts["runs"] += 1
            except Exception as exc:
                tally.error = f"{type(exc).__name__}: {exc}"
                log(f"{name}: {traceback.format_exc()}")
            except KeyboardInterrupt:
                interrupted = True  # no healing: everything is about to be stopped
                raise
            finally:
                if not interrupted:
                    ctx.heal()
                    ctx.stop_agents()
                if name == "spool_full":
                    scenarios.spool_cleanup(ctx)
            tally.figures["seconds"] = [round(time.monotonic() - begun, 1)]
            tallies.append(tally)
            log(f"{name}: {tally.counts}")
    finally:
        with shielded():
            if watch is not None:
                watch.stop()
            fleet.stop_all()
            left = fleet.kill_commands()
            if left:
                log(f"killed {left} process(es) the commands left behind")
            unmount(run_dir / "spool-tmpfs")
            logs = args.out.parent / "faults-logs"
            shutil.rmtree(logs, ignore_errors=True)
            if fleet.logs.exists():
                shutil.copytree(fleet.logs, logs)
            if args.keep:
                log(f"run folder kept: {run_dir}")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
    return report(tallies, args, time.monotonic() - started)


def report(tallies, args, seconds: float) -> int:
    from bench.faults.tally import GATE, median, table

    def figure(scenario: str, key: str):
        found = next((t for t in tallies if t.name == scenario), None)
        return median(found.figures.get(key)) if found else None

    doc = {
        "mode": "short" if args.short else "full",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "seconds": round(seconds, 1),
        "gate": list(GATE),
        "scenarios": {t.name: t.document() for t in tallies},
        "agent_lost_s": figure("agent_kill", "lost_after_s"),
        "agent_frozen_lost_s": figure("agent_frozen", "lost_after_s"),
        "redis_restart_run_ok_s": figure("redis_restart", "run_ok_after_s"),
        "dispatch_frozen_broker_s": figure("frozen_broker_dispatch", "run_exit_s"),
    }
    failed = [t.name for t in tallies if t.failed()]
    doc["failed"] = failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    print(table(tallies))
    print(
        f"agent lost after {doc['agent_lost_s']} s (kill -9); a new run ok "
        f"{doc['redis_restart_run_ok_s']} s after a Redis restart; `run` with a frozen broker "
        f"exited after {doc['dispatch_frozen_broker_s']} s; {seconds:.0f} s in all"
    )
    print(f"written: {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else "; all zero"))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        # The finally in main() has stopped everything by now.
        log(f"interrupted ({exc or 'Ctrl-C'}): everything the suite started is stopped")
        sys.exit(130)
