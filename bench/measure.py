"""The measurements; each returns plain data for results.json."""

import statistics
import subprocess
import sys
import threading
import time
import uuid

import psutil
from celery import group
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from bench.topology import ROOT
from cmdb.hosts.choices import KeyStateChoices
from cmdb.hosts.models import Host
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.dispatch import CommandRequest, dispatch_command
from cmdb.jobs.models import HostTask, Job
from wire import names, signing
from wire.messages import Report, Stream

POLL = 0.01


def spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def create_hosts(ips: list[str], agent: str) -> None:
    Host.objects.bulk_create(
        [Host(ip=ip, agent_name=agent, agent_status="online") for ip in ips],
        ignore_conflicts=True,
    )


def wait_accepted(ips: list[str], timeout: float = 120) -> None:
    """Until the agents' registrations made these hosts accepted (CMDB_AUTO_ACCEPT=all,
    bench.topology): dispatching before would find their keys pending."""
    deadline = time.monotonic() + timeout
    while Host.objects.accepted().filter(ip__in=ips).count() < len(ips):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the bench's {len(ips)} hosts were not all registered in time")
        time.sleep(0.2)


def wait_job(job: Job, timeout: float = 600) -> None:
    terminal = State.terminal()
    deadline = time.monotonic() + timeout
    pending = HostTask.objects.filter(job=job).exclude(state__in=terminal)
    while pending.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job.id} not finished after {timeout} s")
        time.sleep(POLL)


def fanout_ours(app, ips: list[str]) -> float:
    started = time.perf_counter()
    job = dispatch_command(CommandRequest("hostname", ips, timeout=120, reach_timeout=600), app)
    wait_job(job)
    elapsed = time.perf_counter() - started
    bad = HostTask.objects.filter(job=job).exclude(state=State.OK).count()
    if bad:
        raise RuntimeError(f"{bad} host tasks of bench job {job.id} did not end ok")
    return elapsed


def fanout_floor(floor_app, ips: list[str]) -> float:
    started = time.perf_counter()
    result = group(floor_app.signature("bench.floor.hostname", queue=ip) for ip in ips)()
    # interval: how often a result that finished before its subscription is looked up again.
    result.get(timeout=600, interval=0.005)
    elapsed = time.perf_counter() - started
    result.forget()
    return elapsed


def compare(app, floor_app, ips: list[str], reps: int, topology: str) -> dict:
    ours, floor = [], []
    for rep in range(reps):
        # Alternate who goes first, so a warming or noisy machine hurts both alike.
        pair = [("floor", fanout_floor, floor_app), ("ours", fanout_ours, app)]
        for name, run, target in pair if rep % 2 == 0 else reversed(pair):
            (floor if name == "floor" else ours).append(run(target, ips))
    o, f = spread(ours), spread(floor)
    # Each round's own ratio (its two runs were side by side), and their median: a noisy
    # round moves it less than it moves either contender's median.
    ratios = [mine / theirs for mine, theirs in zip(ours, floor, strict=True)]
    return {
        "hosts": len(ips),
        "topology": topology,
        "floor_s": f["median"],
        "ours_s": o["median"],
        "ratio": o["median"] / f["median"],
        "ratio_median_of_rounds": statistics.median(ratios),
        "ratios": ratios,
        "floor": f,
        "ours": o,
    }


def cli_times(env: dict, ips: list[str], app, reps: int = 5) -> dict:
    job = dispatch_command(CommandRequest("hostname", ips, timeout=120, reach_timeout=600), app)
    wait_job(job)
    manage = [sys.executable, str(ROOT / "manage.py")]
    commands = {
        "import_django": [sys.executable, "-c", "import django"],
        "run": [*manage, "run", "hostname", "--hosts", ips[0]],
        "check_task_json": [*manage, "check_task", str(job.id), "--json"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(reps):
        for name, argv in commands.items():
            started = time.perf_counter()
            subprocess.run(
                argv, cwd=ROOT, env=env, capture_output=True, check=name != "check_task_json"
            )
            times[name].append(time.perf_counter() - started)
    out = {name: spread(values) for name, values in times.items()}
    base = out["import_django"]["median"]
    out["run_ratio"] = out["run"]["median"] / base
    out["check_task_ratio"] = out["check_task_json"]["median"] / base
    out["check_task_hosts"] = len(ips)
    return out


def store_rate(app, count: int) -> dict:
    """Publish ``count`` agent-shaped results at once; time until the central worker stored all."""
    job = Job.objects.create(command="burst", timeout=60, reach_timeout=600)
    # Accepted hosts, each report signed as its agent would (one key for all: verifying costs
    # the same whoever holds it).
    key = Ed25519PrivateKey.generate()
    pem = signing.public_pem(key).decode()
    ips = [f"127.5.{i // 250}.{i % 250 + 1}" for i in range(count)]
    Host.objects.filter(ip__in=ips).delete()
    hosts = Host.objects.bulk_create(
        Host(ip=ip, agent_key=pem, key_state=KeyStateChoices.ACCEPTED) for ip in ips
    )
    tasks = HostTask.objects.bulk_create(
        HostTask(job=job, host=host, ip=host.ip, task_id=str(uuid.uuid4())) for host in hosts
    )
    now = time.time()
    stream = Stream.text("bench-host\n")
    # Signed before the clock starts: thousands of agents sign their own.
    payloads = [
        Report(task_id=t.task_id, host=t.ip, agent="agent@burst", agent_pid=1, outcome="ok",
               exit_code=0, stdout=stream, started_at=now, finished_at=now, duration=0.002,
               pid=2).signed(key).to_wire()
        for t in tasks
    ]  # fmt: skip
    started = time.perf_counter()
    # Pipelined, as thousands of agents publishing at once would fill the queue.
    with app.producer_or_acquire() as producer, producer.batch(max_size=500):
        for payload in payloads:
            app.send_task(names.STORE_RESULT, args=[payload],
                          queue=settings.CMDB["RESULTS_QUEUE"], producer=producer)  # fmt: skip
    published = time.perf_counter() - started
    wait_job(job)
    elapsed = time.perf_counter() - started
    return {
        "results": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
        "publish_seconds": published,
    }


def _agent_rss(root: psutil.Process) -> int:
    """RSS of the agent and its pool children, not of the command (it has its own session)."""
    total, sid = 0, psutil.Process(root.pid).pid
    for proc in [root, *root.children(recursive=True)]:
        try:
            if proc.pid == root.pid or psutil.Process(proc.pid).ppid() == sid:
                total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def agent_memory(app, fleet, ip: str) -> dict:
    agent = psutil.Process(fleet.processes[f"agent-{ip}"].pid)
    fanout_ours(app, [ip])  # the pool child has run a command before the baseline
    baseline = _agent_rss(agent)
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _agent_rss(agent))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    command = "head -c 100000000 /dev/zero | tr '\\0' a"
    job = dispatch_command(CommandRequest(command, [ip], timeout=300, reach_timeout=600), app)
    wait_job(job)
    done.set()
    sampler.join()
    task = HostTask.objects.get(job=job)
    mib = 1024 * 1024
    return {
        "output_bytes": task.stdout_bytes,
        "baseline_mib": baseline / mib,
        "peak_mib": peak[0] / mib,
        "growth_mib": (peak[0] - baseline) / mib,
    }


def collection_cost(app, ips: list[str], reps: int = 3) -> dict:
    """A fact collection on every host: agent-side time per host, end to end, report size."""
    from cmdb.assets.models import FactReport
    from cmdb.jobs.choices import JobKindChoices

    per_host, whole, sizes = [], [], []
    for _ in range(reps):
        started = time.perf_counter()
        job = dispatch_command(
            CommandRequest(kind=JobKindChoices.COLLECT, targets=ips, reach_timeout=600), app
        )
        wait_job(job)
        whole.append(time.perf_counter() - started)
        per_host += list(HostTask.objects.filter(job=job).values_list("duration", flat=True))
        sizes += list(FactReport.objects.filter(job=job).values_list("size_bytes", flat=True))
    return {"hosts": len(ips), "agent_seconds_per_host": spread(per_host),
            "job_seconds": spread(whole), "report_bytes": spread(sizes)}  # fmt: skip


def targets(report: dict) -> dict:
    fan = report["fanout"]
    out = {}
    if "200" in fan:
        out["fanout_200_within_1.5x"] = fan["200"]["ratio_median_of_rounds"] <= 1.5
    if "1000" in fan:
        out["fanout_1000_within_3x"] = fan["1000"]["ratio"] <= 3.0
    out["run_under_2x_import_django"] = report["cli"]["run_ratio"] < 2.0
    out["store_5000_per_s"] = report["store_rate"]["per_second"] >= 5000
    big = report.get("emulated", {}).get("10000")
    if big:
        out["emulated_10000_within_5s"] = big["end_to_end_s"] <= 5
        out["emulated_10000_stored_5000_per_s"] = (big["stored_per_s"] or 0) >= 5000
        out["emulated_10000_dispatch_10000_per_s"] = big["dispatch_alone_per_s"] >= 10000
    if "pages" in report:
        worst = max(max(row["superuser_ms"]["median"], row["restricted_ms"]["median"])
                    for row in report["pages"]["pages"].values())  # fmt: skip
        out["pages_under_300ms"] = worst < 300
    if "agents" in report:
        agents = report["agents"]
        out["agent_2_connections"] = agents["broker_connections"]["max"] <= 2
        out["idle_10000_agents_under_20pct_redis_core"] = (
            agents["redis_cpu_percent_at_10000_agents_extrapolated"] < 20
        )
    if "agent_memory" in report:
        out["agent_growth_under_20mib"] = report["agent_memory"]["growth_mib"] < 20
    return out


def markdown(report: dict) -> str:
    lines = [
        "| hosts | topology | floor s (min-max) | ours s (min-max) | ours/floor "
        "| median of rounds' ratios |",
        "|---:|---|---|---|---:|---:|",
    ]
    for section in ("fanout", "fanout_per_host"):
        for size, row in report[section].items():
            f, o = row["floor"], row["ours"]
            lines.append(
                f"| {size} | {row['topology']} | {f['median']:.3f} ({f['min']:.3f}-{f['max']:.3f}) "
                f"| {o['median']:.3f} ({o['min']:.3f}-{o['max']:.3f}) | {row['ratio']:.2f} "
                f"| {row['ratio_median_of_rounds']:.2f} |"
            )
    cli = report["cli"]
    lines += [
        "",
        "| process | median s (min-max) | / import django |",
        "|---|---|---:|",
    ]
    for name, key in (
        ("python -c 'import django'", "import_django"),
        ("manage.py run (prints its id)", "run"),
        (f"manage.py check_task --json ({cli['check_task_hosts']} hosts)", "check_task_json"),
    ):
        s = cli[key]
        ratio = s["median"] / cli["import_django"]["median"]
        lines.append(
            f"| {name} | {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}) | {ratio:.2f} |"
        )
    rate = report["store_rate"]
    lines += [
        "",
        f"Central worker: {rate['results']} results stored in {rate['seconds']:.2f} s = "
        f"**{rate['per_second']:.0f} results/s**.",
    ]
    if "agent_memory" in report:
        mem = report["agent_memory"]
        lines.append(
            f"Agent memory with a {mem['output_bytes'] / 1e6:.0f} MB output: "
            f"{mem['baseline_mib']:.1f} MiB -> peak {mem['peak_mib']:.1f} MiB "
            f"(**+{mem['growth_mib']:.1f} MiB**)."
        )
    if "collection" in report:
        col = report["collection"]
        lines.append(
            f"Fact collection: {col['agent_seconds_per_host']['median'] * 1000:.0f} ms per host on "
            f"the agent, {col['job_seconds']['median']:.2f} s for a job on {col['hosts']} hosts "
            f"end to end, reports of {col['report_bytes']['median'] / 1024:.1f} KiB."
        )
    lines += [
        "",
        "Targets: "
        + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in report["targets"].items()),
        "",
    ]
    return "\n".join(lines)
