"""Live output's cost and the operator's loop as felt (issue 18).

    python -m bench.live [--tasks 200] [--hosts 10] [--reps 7]

1. The agent's per-task cost of live output, before and after: the real runner running
   `hostname` without a LiveOutput (before) and with one (after; it sends nothing for a
   command that ends before its first flush), in this process, medians of ``tasks`` runs.
2. `hostname` tasks per second through one real agent (live output on): ``tasks`` one-host
   jobs dispatched at once, from the first dispatch to the last result stored.
3. The loop from the shell prompt to every host's output printed, `hostname` on ``hosts``
   real agents: `manage.py run hostname --hosts ... --wait` (results pushed), against the
   two commands it replaces (`run`, then `check_task --wait`, which polls); median of ``reps``.

Starts its own Redis, central worker and agents on 127.7.0.x (bench.agents' fleet). Writes
bench/out/live.json; prints markdown.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.agents import AgentsFleet, _setup_django, _wait_online
from bench.topology import ROOT, host_ips

OUT = ROOT / "bench" / "out"
USER = "bench"


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}  # fmt: skip


def runner_cost(n: int) -> dict:
    """Seconds per `hostname` through workers.runner without and with live output."""
    from workers import live, runner

    def once(with_live: bool) -> float:
        sink = (live.LiveOutput(lambda chunk: None, "t", "127.0.0.1", "bench")
                if with_live else None)  # fmt: skip
        started = time.perf_counter()
        runner.run_command("hostname", timeout=30, live=sink)
        return time.perf_counter() - started

    before, after = [], []
    for _ in range(n):  # interleaved: the machine's drift is shared by both
        before.append(once(False))
        after.append(once(True))
    return {"before": spread(before), "after": spread(after),
            "added_ms": (statistics.median(after) - statistics.median(before)) * 1000}  # fmt: skip


def throughput(app, ip: str, n: int) -> dict:
    from bench import measure
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.dispatch import CommandRequest, dispatch_command
    from cmdb.jobs.models import HostTask

    started = time.perf_counter()
    jobs = [dispatch_command(CommandRequest("hostname", [ip], timeout=60, reach_timeout=600), app)
            for _ in range(n)]  # fmt: skip
    dispatched = time.perf_counter() - started
    for job in jobs:
        measure.wait_job(job, timeout=600)
    elapsed = time.perf_counter() - started
    ok = HostTask.objects.filter(job__in=jobs, state=State.OK).count()
    return {"tasks": n, "ok": ok, "seconds": elapsed, "dispatch_seconds": dispatched,
            "tasks_per_second": n / elapsed}  # fmt: skip


def loop(env: dict, ips: list[str], reps: int) -> dict:
    manage = [sys.executable, str(ROOT / "manage.py")]
    hosts = ["--hosts", *ips]

    def timed(*argvs) -> float:
        started = time.perf_counter()
        job = None
        for argv in argvs:
            argv = [a.replace("JOB", job or "") for a in argv]
            out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{argv[2]} exited {out.returncode}: {out.stderr[-500:]}")
            job = job or out.stdout.split("task id: ")[1].split()[0]
        return time.perf_counter() - started

    wait, two, python = [], [], []
    for _ in range(reps):
        wait.append(timed([*manage, "run", "hostname", *hosts, "--wait"]))
        two.append(timed([*manage, "run", "hostname", *hosts],
                         [*manage, "check_task", "JOB", "--wait"]))  # fmt: skip
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python.append(time.perf_counter() - started)
    return {"hosts": len(ips), "reps": reps, "run_wait": spread(wait),
            "run_then_check_task_wait": spread(two), "python_c_pass": spread(python),
            "speedup": statistics.median(two) / statistics.median(wait)}  # fmt: skip


def measure_live(tasks: int = 200, hosts: int = 10, reps: int = 7) -> dict:
    report = {"runner": runner_cost(tasks)}
    run_dir = OUT / "live-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    fleet = AgentsFleet(run_dir)
    ips = host_ips("7", hosts)
    # Before anything reads the settings (starting Redis does): this fleet's database.
    os.environ.update({k: v for k, v in fleet.env.items()
                       if k.startswith(("CMDB_", "REDIS_", "DATABASE_", "DJANGO_"))})  # fmt: skip
    try:
        fleet.start_redis()
        _setup_django(fleet)
        from django.contrib.auth.models import User

        from cmdb.celery import app

        User.objects.create_superuser(USER, "bench@example.com", None)
        fleet.start_central()
        for ip in ips:
            fleet.start_agent(ip, concurrency=1)
        _wait_online(ips, timeout=300)
        throughput(app, ips[0], 10)  # warm: pool child, connections
        report["through_agent"] = throughput(app, ips[0], tasks)
        report["loop"] = loop({**fleet.env, "CMDB_USER": USER}, ips, reps)
    finally:
        fleet.stop_all()
    return report


def markdown(r: dict) -> str:
    run, agent, lp = r["runner"], r["through_agent"], r["loop"]
    return "\n".join([
        "| measure | value |", "| --- | ---: |",
        f"| runner, `hostname`, before (no live output), ms | {run['before']['median'] * 1e3:.2f} "
        "|",
        f"| runner, `hostname`, after (live output on), ms | {run['after']['median'] * 1e3:.2f} "
        "|",
        f"| added per task, ms | {run['added_ms']:.3f} |",
        f"| `hostname` through one real agent, tasks/s | {agent['tasks_per_second']:.1f} |",
        f"| `run hostname --hosts {lp['hosts']} agents --wait`, s (median of {lp['reps']}) "
        f"| {lp['run_wait']['median']:.2f} |",
        f"| `run` then `check_task --wait`, s | {lp['run_then_check_task_wait']['median']:.2f} |",
        f"| `python -c pass`, s | {lp['python_c_pass']['median']:.3f} |",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.live", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")
    report = measure_live(args.tasks, args.hosts, args.reps)
    OUT.mkdir(parents=True, exist_ok=True)
    Path(OUT / "live.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))


if __name__ == "__main__":
    main()
