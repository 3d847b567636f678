"""One job fanned out to N EMULATED hosts (bench.emulated.agent), measured on the central side.

Per N: the time to dispatch (recorded, signed, published), the time until every result is
stored, results stored per second, the broker's memory per queued message and per finished
host task, the database's rows and bytes per host task, and the CPU seconds each part of the
system spent (where the time goes on these 2 cores: the emulated agents' share is work that
real hosts would do on their own CPUs).
"""

import os
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis
from django.db import connection
from django_celery_results.models import TaskResult

from cmdb.hosts.choices import KeyStateChoices
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.dispatch import CommandRequest, dispatch_command
from cmdb.jobs.models import HostTask
from wire import signing

#: Emulated agent processes per size: enough to keep both cores busy, few enough that each
#: consumes thousands of queues.
PROCESSES = int(os.environ.get("BENCH_EMULATED_PROCESSES", "4"))
ROUNDS = {1000: 5, 10000: 3}
POLL = 0.05
BENCH = "bench process (dispatch and polling)"


def ips_for(size: int) -> list[str]:
    """127.<8 + n>.x.y, a block of its own per size (each job's hosts start with no history)."""
    block = {1000: 8, 10000: 9, 50000: 10}.get(size, 11)
    return [f"127.{block}.{i // 250}.{i % 250 + 1}" for i in range(size)]


class EmulatedFleet:
    """``size`` hosts in the inventory, answered by PROCESSES emulated agents."""

    def __init__(self, fleet, size: int, processes: int = PROCESSES):
        self.fleet, self.size = fleet, size
        self.ips = ips_for(size)
        self.dir = Path(fleet.run_dir) / "emulated" / str(size)
        self.names: list[str] = []
        slices = [self.ips[i::processes] for i in range(processes)]
        self.slices = [s for s in slices if s]

    def register(self) -> HostGroup:
        """Hosts with each emulated process's key accepted (what `keys accept` would record),
        in a group of their own: the job is `run --group`."""
        hosts = []
        for n, ips in enumerate(self.slices):
            state = self.dir / f"agent{n}"
            state.mkdir(parents=True, exist_ok=True)
            pem = signing.public_pem(signing.generate_key_pair(state / "agent_key")).decode()
            hosts += [Host(ip=ip, agent_key=pem, key_state=KeyStateChoices.ACCEPTED,
                           agent_status="online", agent_name=f"emulated{n}")
                      for ip in ips]  # fmt: skip
        Host.objects.bulk_create(hosts, batch_size=2000)
        group, _ = HostGroup.objects.get_or_create(name=f"emulated-{self.size}")
        group.hosts.add(*Host.objects.filter(ip__in=self.ips).values_list("pk", flat=True))
        return group

    def start(self) -> None:
        for n, ips in enumerate(self.slices):
            state = self.dir / f"agent{n}"
            (state / "hosts").write_text("\n".join(ips))
            ready = state / "ready"
            ready.unlink(missing_ok=True)
            name = f"emulated-{self.size}-{n}"
            self.fleet.spawn(name, [sys.executable, "-m", "bench.emulated.agent",
                                    str(state / "hosts"), str(ready)],
                             {"CMDB_AGENT_PUBKEY": self.fleet.agent_pubkey(),
                              "CMDB_AGENT_STATE_DIR": str(state)})  # fmt: skip
            self.names.append(name)
        deadline = time.monotonic() + 120
        while not all((self.dir / f"agent{n}" / "ready").exists() for n in range(len(self.slices))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"emulated agents for {self.size} hosts did not start")
            time.sleep(0.1)

    def processes(self) -> list[psutil.Process]:
        return [psutil.Process(self.fleet.processes[name].pid) for name in self.names]

    def signal(self, sig: int) -> None:
        for proc in self.processes():
            proc.send_signal(sig)

    def stop(self) -> None:
        for name in self.names:
            self.fleet.stop(name)
        self.names = []


def _cpu(procs: list[psutil.Process], children: bool = True) -> float:
    """CPU seconds of ``procs`` (and their pool children: not this process's, which are the
    fleet's other parts)."""
    total = 0.0
    for proc in procs:
        try:
            for p in [proc, *(proc.children(recursive=True) if children else [])]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _db_bytes() -> int:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            used = []
            for pragma in ("page_count", "freelist_count", "page_size"):
                cursor.execute(f"PRAGMA {pragma}")
                used.append(cursor.fetchone()[0])
            return (used[0] - used[1]) * used[2]
        cursor.execute("SELECT pg_database_size(current_database())")
        return cursor.fetchone()[0]


def _wait_stored(job, timeout: float = 900) -> None:
    pending = HostTask.objects.filter(job=job).exclude(state__in=State.terminal())
    deadline = time.monotonic() + timeout
    while pending.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job.pk}: not every result stored after {timeout} s")
        time.sleep(POLL)


def one_round(app, group: HostGroup, parts: dict) -> dict:
    """Dispatch to the group, wait for every result; the figures of this round."""
    cpu_before = {name: _cpu(procs, name != BENCH) for name, procs in parts.items()}
    me = psutil.Process()
    cpu_at = _cpu([me], children=False)
    started_wall, started = time.time(), time.perf_counter()
    job = dispatch_command(CommandRequest("hostname", groups=[group.name], timeout=60,
                                          reach_timeout=600, confirm=True), app)  # fmt: skip
    dispatched = time.perf_counter() - started
    dispatch_cpu = _cpu([me], children=False) - cpu_at
    _wait_stored(job)
    results = TaskResult.objects.filter(task_id__in=HostTask.objects.filter(job=job)
                                        .values("task_id"))  # fmt: skip
    done = sorted(results.values_list("date_done", flat=True))
    first, last = (d.timestamp() for d in (done[0], done[-1]))
    bad = HostTask.objects.filter(job=job).exclude(state=State.OK).count()
    if bad:
        raise RuntimeError(f"{bad} host tasks of emulated job {job.pk} did not end ok")
    n = len(done)
    return {
        "job": str(job.pk),
        "dispatch_s": dispatched,
        "end_to_end_s": last - started_wall,
        # From the first result stored to the last: the intake's pace while agents answer.
        "stored_per_s": (n - 1) / (last - first) if last > first else None,
        "dispatch_per_s": n / dispatched,
        "cpu_s": {
            "dispatch": dispatch_cpu,
            **{
                name: _cpu(procs, name != BENCH) - cpu_before[name] for name, procs in parts.items()
            },
        },
    }


def _median(rounds: list[dict], key: str):
    values = [r[key] for r in rounds if r[key] is not None]
    return statistics.median(values) if values else None


def measure_size(app, fleet, size: int, dispatcher: psutil.Process) -> dict:
    emulated = EmulatedFleet(fleet, size)
    group = emulated.register()
    emulated.start()
    broker = redis.Redis.from_url(fleet.redis_url)
    redis_proc = psutil.Process(fleet.processes["redis"].pid)
    try:
        parts = {BENCH: [dispatcher],
                 "central worker": [psutil.Process(fleet.processes["central"].pid)],
                 "redis": [redis_proc], "emulated agents": emulated.processes()}  # fmt: skip
        # The broker's memory: with the agents stopped, per queued message; after the job,
        # per finished host task (the run-once claims live on for hours).
        emulated.signal(signal.SIGSTOP)
        before = broker.info("memory")["used_memory"]
        db_before = _db_bytes()
        started = time.perf_counter()
        job = dispatch_command(CommandRequest("hostname", groups=[group.name], timeout=60,
                                              reach_timeout=600, confirm=True), app)  # fmt: skip
        alone = time.perf_counter() - started
        queued = broker.info("memory")["used_memory"]
        emulated.signal(signal.SIGCONT)
        _wait_stored(job)
        retained = broker.info("memory")["used_memory"]
        db_after = _db_bytes()
        rounds = [one_round(app, group, parts) for _ in range(ROUNDS.get(size, 1))]
    finally:
        emulated.signal(signal.SIGCONT)
        emulated.stop()
    cpu = {name: statistics.median(r["cpu_s"][name] for r in rounds) for name in rounds[0]["cpu_s"]}
    return {
        "emulated": True,
        "hosts": size,
        "agent_processes": len(emulated.slices),
        "rounds": len(rounds),
        "dispatch_s": _median(rounds, "dispatch_s"),
        "end_to_end_s": _median(rounds, "end_to_end_s"),
        "stored_per_s": _median(rounds, "stored_per_s"),
        "dispatch_per_s": _median(rounds, "dispatch_per_s"),
        # The same dispatch with the agents stopped (one round): nothing else wants the cores.
        "dispatch_alone_s": alone,
        "dispatch_alone_per_s": size / alone,
        "each_round": [{k: v for k, v in r.items() if k != "cpu_s"} for r in rounds],
        "cpu_s": cpu,
        "broker_bytes_per_queued_message": (queued - before) / size,
        "broker_bytes_per_finished_host_task": (retained - before) / size,
        # A host task is its own row and its django-celery-results TaskResult.
        "db_rows_per_host_task": 2,
        "db_bytes_per_host_task": (db_after - db_before) / size,
        "measured_at": datetime.now(UTC).isoformat(),
    }


def measure_emulated(app, fleet, sizes: list[int]) -> dict:
    me = psutil.Process()
    return {str(size): measure_size(app, fleet, size, me) for size in sizes}


def markdown(emulated: dict) -> str:
    lines = [
        "EMULATED hosts (bench.emulated.agent: the agent's message path, no command run)",
        "",
        "| hosts | dispatch s | dispatch msg/s | alone: s, msg/s | dispatch to all stored s "
        "| stored/s "
        "| broker B/queued msg | broker B/finished task | DB B/host task |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for size, row in emulated.items():
        lines.append(
            f"| {size} | {row['dispatch_s']:.2f} | {row['dispatch_per_s']:.0f} "
            f"| {row['dispatch_alone_s']:.2f}, {row['dispatch_alone_per_s']:.0f} "
            f"| {row['end_to_end_s']:.2f} | {row['stored_per_s'] or 0:.0f} "
            f"| {row['broker_bytes_per_queued_message']:.0f} "
            f"| {row['broker_bytes_per_finished_host_task']:.0f} "
            f"| {row['db_bytes_per_host_task']:.0f} |"
        )
    lines += ["", "CPU seconds per job (median of the rounds):", "",
              "| hosts | " + " | ".join(next(iter(emulated.values()))["cpu_s"]) + " |",
              "|---:|" + "---:|" * len(next(iter(emulated.values()))["cpu_s"])]  # fmt: skip
    for size, row in emulated.items():
        lines.append(f"| {size} | " + " | ".join(f"{v:.2f}" for v in row["cpu_s"].values()) + " |")
    return "\n".join(lines) + "\n"
