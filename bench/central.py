"""`python -m bench.central [--count N] [--rounds R]`: one central worker against two (PostgreSQL).

Scale-out of the server is more central workers on one database (DESIGN.md, decision 8). This
publishes a burst of ``count`` agent-shaped signed results (as bench.measure.store_rate does) to
a Redis of its own, and times storing them on a throwaway PostgreSQL cluster
(tests/support/postgres.py) with one central worker, with two consuming the same results
queue, and with two of which one is killed (SIGKILL) half-way through the burst. Each variant
is then checked:

- lost: host tasks that did not end with their own result (state, exit code, output as
  reported), or have no TaskResult;
- stored twice: host tasks whose row (HostTask or TaskResult) was written more than once, and
  of those writes the ones that changed anything. Counted by triggers installed in the bench's
  database only (every UPDATE of a host task, every insert or upsert of a TaskResult is one
  row in ``bench_writes``), so a second write is seen even when it wrote the same values.

Writes bench/out/central.json (``--out``) and prints a table. ``measure_central(count)`` runs
the same in a process of its own and returns the report.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.topology import ROOT, Fleet, free_port, interrupt_on_signals, shielded, wait_for
from tests.support import postgres

OUT = ROOT / "bench" / "out"
#: Hosts of the burst: rows in the bench's database only, no address is ever contacted.
IP_PREFIX = "127.16"
#: Where the burst is published before it is released onto the results list.
STAGING = "bench.central.staging"
VARIANTS = ("one_worker", "two_workers", "two_workers_one_killed")
#: Environment the bench must not inherit (its processes use their own broker and database).
FOREIGN = ("REDIS_URL", "DATABASE_URL", "CMDB_RUN_DIR", "CMDB_SIGNING_KEY", "CMDB_AGENT_PUBKEY",
           "CMDB_FETCH_DIR", "CMDB_AUTO_ACCEPT", "CMDB_SPOOL_DIR", "CMDB_MONITOR")  # fmt: skip
POLL = 0.05

#: Every write of a host task's row and of a TaskResult, one row each, with whether it changed
#: what the row says (a TaskResult's date_done is new at every upsert: not counted as a change).
TRIGGERS = """
CREATE TABLE bench_writes (
    id bigserial PRIMARY KEY, tbl text NOT NULL, task_id text NOT NULL, changed boolean NOT NULL
);
CREATE FUNCTION bench_hosttask_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_writes (tbl, task_id, changed)
    VALUES ('hosttask', NEW.task_id, OLD IS DISTINCT FROM NEW);
    RETURN NULL;
END $$;
CREATE FUNCTION bench_taskresult_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_writes (tbl, task_id, changed)
    VALUES ('taskresult', NEW.task_id, TG_OP = 'INSERT' OR
            (OLD.status, OLD.result, OLD.traceback, OLD.worker, OLD.date_started)
            IS DISTINCT FROM
            (NEW.status, NEW.result, NEW.traceback, NEW.worker, NEW.date_started));
    RETURN NULL;
END $$;
CREATE TRIGGER bench_hosttask_write AFTER UPDATE ON {hosttask}
    FOR EACH ROW EXECUTE FUNCTION bench_hosttask_write();
CREATE TRIGGER bench_taskresult_write AFTER INSERT OR UPDATE ON {taskresult}
    FOR EACH ROW EXECUTE FUNCTION bench_taskresult_write();
"""


def measure_central(count: int = 10000, rounds: int = 3) -> dict:
    """The report of ``python -m bench.central``, measured in a process of its own (it needs
    Django set up on its own PostgreSQL cluster, whatever the caller's database is)."""
    with tempfile.TemporaryDirectory(prefix="cmdb-central-out-") as folder:
        out = Path(folder) / "central.json"
        subprocess.run([sys.executable, "-m", "bench.central", "--count", str(count),
                        "--rounds", str(rounds), "--out", str(out), "--quiet"],
                       cwd=ROOT, check=True)  # fmt: skip
        return json.loads(out.read_text())


class CentralBench:
    """The bench's processes and its burst; made once Django is set up."""

    def __init__(self, fleet: Fleet, count: int):
        from cmdb.celery import app
        from cmdb.hosts.choices import KeyStateChoices
        from cmdb.hosts.models import Host
        from wire import signing

        self.fleet, self.count, self.app = fleet, count, app
        # Accepted hosts, each report signed as its agent would (one key for all: verifying
        # costs the same whoever holds it).
        self.key = Ed25519PrivateKey.generate()
        pem = signing.public_pem(self.key).decode()
        ips = [f"{IP_PREFIX}.{i // 250}.{i % 250 + 1}" for i in range(count)]
        self.hosts = Host.objects.bulk_create(
            Host(ip=ip, agent_key=pem, key_state=KeyStateChoices.ACCEPTED) for ip in ips
        )

    # -- processes ---------------------------------------------------------------------------
    def start_central(self, name: str) -> None:
        self.fleet.start_central(name=name)
        node = f"{name}@{socket.gethostname()}"
        wait_for(lambda: any(node in r for r in self.app.control.ping([node], timeout=1.0)), 90,
                 f"{node} to answer pings", interval=0.5)  # fmt: skip

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.fleet.redis_url)

    def consumer_of(self, name: str) -> str | None:
        """The intake (cmdb.jobs.intake.consumer_name) of the running central worker ``name``."""
        from cmdb.jobs.intake import CONSUMERS_KEY

        pid = self.fleet.processes[name].pid
        for raw in self.redis().smembers(CONSUMERS_KEY):
            consumer = raw.decode()
            if consumer.startswith(f"{name}@") and consumer.rsplit(":", 2)[1] == str(pid):
                return consumer
        return None

    def settled(self) -> bool:
        """Nothing left on the results list nor on any intake's processing list."""
        from django.conf import settings

        client = self.redis()
        return not client.llen(settings.CMDB["RESULTS_QUEUE"]) and not any(
            client.llen(k) for k in client.scan_iter("cmdb:intake:*:processing")
        )

    # -- one burst ---------------------------------------------------------------------------
    def prepare(self, label: str):
        """A job with a host task per host and each host's signed report (every third exits 1:
        the state, not only the output, must be the task's own)."""
        from cmdb.jobs.models import HostTask, Job
        from wire.messages import Outcome, Report, Stream

        job = Job.objects.create(command=label, timeout=60, reach_timeout=600)
        tasks = HostTask.objects.bulk_create(
            HostTask(job=job, host=h, ip=h.ip, task_id=str(uuid.uuid4())) for h in self.hosts
        )
        now = time.time()
        expected, payloads = {}, []
        for i, task in enumerate(tasks):
            code = 1 if i % 3 == 0 else 0
            expected[task.task_id] = code
            payloads.append(
                Report(task_id=task.task_id, host=task.ip, agent="agent@burst", agent_pid=1,
                       outcome=Outcome.FAILED if code else Outcome.OK, exit_code=code,
                       stdout=Stream.text(f"marker {task.task_id}\n"), started_at=now,
                       finished_at=now, duration=0.002, pid=2).signed(self.key).to_wire()
            )  # fmt: skip
        return job, expected, payloads

    def publish(self, payloads: list[dict]) -> None:
        """The burst onto a list nobody consumes (STAGING): released at once by release()."""
        from wire import names

        # Pipelined, as thousands of agents publishing at once would fill the queue.
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=500):
            for payload in payloads:
                self.app.send_task(names.STORE_RESULT, args=[payload], queue=STAGING,
                                   producer=producer)  # fmt: skip

    def release(self) -> None:
        """The whole burst onto the results list in one step (RENAME: the intakes blocked on it
        wake up), so that what is timed is storing, not this process publishing 10,000
        messages on a machine it shares with the central workers and PostgreSQL."""
        from django.conf import settings

        client, queue = self.redis(), settings.CMDB["RESULTS_QUEUE"]
        if client.llen(queue):
            raise RuntimeError(f"{queue} is not empty: RENAME would drop what is there")
        client.rename(STAGING, queue)

    def run(self, label: str, workers: list[str], kill: str | None = None) -> dict:
        """Publish a burst, then release it to ``workers``; with ``kill``, SIGKILL that worker
        once half the burst is stored. Seconds from the release to the last task stored."""
        from django.db import connection

        from cmdb.jobs.choices import HostTaskStateChoices as State
        from cmdb.jobs.intake import PROCESSING_KEY
        from cmdb.jobs.models import HostTask

        job, expected, payloads = self.prepare(label)
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(id), 0) FROM bench_writes")
            [mark] = cursor.fetchone()
        offsets = {name: log_size(self.fleet, name) for name in workers}
        ended = HostTask.objects.filter(job=job, state__in=State.terminal())
        killed = {}
        started = time.perf_counter()
        self.publish(payloads)
        published = time.perf_counter() - started
        consumer = self.consumer_of(kill) if kill else None
        started = time.perf_counter()
        self.release()
        if kill:
            stored = wait_for(lambda: (n := ended.count()) >= self.count // 2 and n, 600,
                              "half the burst stored", interval=0.02)  # fmt: skip
            held = self.redis().llen(PROCESSING_KEY.format(consumer=consumer)) if consumer else 0
            at = time.perf_counter() - started
            self.fleet.stop(kill, signal.SIGKILL, timeout=5)
            killed = {"killed": kill, "killed_at_stored": stored, "held_at_kill": held,
                      "killed_after_seconds": at}  # fmt: skip
        wait_for(lambda: ended.count() == self.count, 600, f"{self.count} tasks stored",
                 interval=POLL)  # fmt: skip
        elapsed = time.perf_counter() - started
        # A batch put back (a killed worker's, committed but not acknowledged) may be stored
        # again after the last task ended: count writes once every list is empty.
        wait_for(self.settled, 60, "the results and processing lists to empty", interval=0.2)
        time.sleep(1)
        return {
            "results": self.count,
            "seconds": elapsed,
            "per_second": self.count / elapsed,
            "publish_seconds": published,
            **killed,
            **self.check(job, expected, mark),
            **self.logged(offsets),
        }

    def check(self, job, expected: dict[str, int], mark: int) -> dict:
        from django.db import connection
        from django.db.models import Count
        from django_celery_results.models import TaskResult

        from cmdb.jobs.choices import HostTaskStateChoices as State
        from cmdb.jobs.models import HostTask

        wrong = 0
        for task_id, state, code, head in HostTask.objects.filter(job=job).values_list(
            "task_id", "state", "exit_code", "stdout_head"
        ):
            want = (State.FAILED, 1) if expected[task_id] else (State.OK, 0)
            wrong += (state, code) != want or head != f"marker {task_id}\n"
        results = dict(
            TaskResult.objects.filter(task_id__in=list(expected))
            .values_list("task_id")
            .annotate(n=Count("id"))
        )
        no_result = sum(1 for i in expected if i not in results)
        with connection.cursor() as cursor:
            # The second and later writes of each row (n > 1), by table.
            cursor.execute(
                "WITH w AS (SELECT tbl, task_id, changed, row_number() OVER"
                " (PARTITION BY tbl, task_id ORDER BY id) AS n FROM bench_writes WHERE id > %s)"
                " SELECT tbl, count(*), count(*) FILTER (WHERE changed),"
                " count(DISTINCT task_id) FROM w WHERE n > 1 GROUP BY tbl",
                [mark],
            )
            again = {tbl: (n, changed, tasks) for tbl, n, changed, tasks in cursor.fetchall()}
            cursor.execute(
                "SELECT count(DISTINCT task_id) FROM (SELECT tbl, task_id FROM bench_writes"
                " WHERE id > %s GROUP BY tbl, task_id HAVING count(*) > 1) t",
                [mark],
            )
            [twice] = cursor.fetchone()
            cursor.execute(
                "SELECT tbl, count(*) FROM bench_writes WHERE id > %s GROUP BY tbl", [mark]
            )
            writes = dict(cursor.fetchall())
        return {
            "lost": wrong + no_result,
            "ended_wrong": wrong,
            "without_taskresult": no_result,
            "taskresults_not_one": sum(1 for n in results.values() if n != 1),
            "stored_twice": twice,
            "second_writes": {tbl: n for tbl, (n, _, _) in again.items()},
            "second_writes_that_changed": sum(changed for _, changed, _ in again.values()),
            "writes": writes,
        }

    def logged(self, offsets: dict[str, int]) -> dict:
        """What the central workers' logs say of this burst: results refused as already
        stored (cmdb.jobs.lifecycle), messages put back from a dead intake's list."""
        refused = put_back = 0
        for name, offset in offsets.items():
            text = read_log(self.fleet, name, offset)
            refused += text.count(" refused (")
            for line in text.splitlines():
                if "put back" in line and "intake" in line:
                    put_back += int(line.split("put back ")[1].split()[0])
        return {"refused_as_stored": refused, "put_back": put_back}


def create_database(url: str) -> None:
    """The database ``url`` names, in the new cluster (initdb makes only ``postgres``)."""
    server, _, name = url.rpartition("/")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def log_size(fleet: Fleet, name: str) -> int:
    path = fleet.logs / f"{name}.log"
    return path.stat().st_size if path.exists() else 0


def read_log(fleet: Fleet, name: str, offset: int) -> str:
    path = fleet.logs / f"{name}.log"
    if not path.exists():
        return ""
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")


def summary(runs: list[dict]) -> dict:
    """Medians of the timings; lost and stored twice summed over the rounds."""
    out = {
        "rounds": len(runs),
        "results": runs[0]["results"],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "per_second": statistics.median(r["per_second"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "stored_twice": sum(r["stored_twice"] for r in runs),
        "second_writes_that_changed": sum(r["second_writes_that_changed"] for r in runs),
        "refused_as_stored": sum(r["refused_as_stored"] for r in runs),
        "put_back": sum(r["put_back"] for r in runs),
        "runs": runs,
    }
    return out


def measure_here(count: int, rounds: int, log=print) -> dict:
    """Everything: a PostgreSQL cluster, a Redis and central workers of its own, the rounds."""
    interrupt_on_signals()
    run_dir = Path(tempfile.mkdtemp(prefix="cmdb-central-"))
    try:
        with postgres.cluster() as database:
            create_database(database)
            fleet = Fleet(run_dir, {
                "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                "DATABASE_URL": database,
                # INFO: lifecycle logs each result refused as already stored (counted).
                "CMDB_LOGLEVEL": "INFO",
                "CMDB_COLLECT_ON_START": "0",
                # No agent beats for the burst's hosts: keep the monitor out of the way.
                "CMDB_AGENT_LOST_AFTER": "600",
            })  # fmt: skip
            for name in FOREIGN:
                if name not in ("REDIS_URL", "DATABASE_URL", "CMDB_RUN_DIR"):
                    fleet.env.pop(name, None)
                os.environ.pop(name, None)
            prefixes = ("CMDB_", "REDIS_", "DATABASE_", "DJANGO_")
            os.environ.update({k: v for k, v in fleet.env.items() if k.startswith(prefixes)})
            try:
                return _rounds(fleet, count, rounds, log)
            finally:
                with shielded():
                    fleet.stop_all()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _rounds(fleet: Fleet, count: int, rounds: int, log) -> dict:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=fleet.env,
                   check=True)  # fmt: skip
    import django

    django.setup()
    from django.db import connection
    from django_celery_results.models import TaskResult

    from cmdb.jobs.models import HostTask

    with connection.cursor() as cursor:
        cursor.execute(TRIGGERS.format(hosttask=HostTask._meta.db_table,
                                       taskresult=TaskResult._meta.db_table))  # fmt: skip
    fleet.start_redis()
    bench = CentralBench(fleet, count)
    bench.start_central("central1")
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for n in range(rounds):
        log(f"round {n + 1}/{rounds}: one central worker")
        runs["one_worker"].append(bench.run(f"one {n}", ["central1"]))
        bench.start_central("central2")
        log(f"round {n + 1}/{rounds}: two central workers")
        runs["two_workers"].append(bench.run(f"two {n}", ["central1", "central2"]))
        log(f"round {n + 1}/{rounds}: two central workers, central2 killed half-way")
        runs["two_workers_one_killed"].append(
            bench.run(f"kill {n}", ["central1", "central2"], kill="central2")
        )
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "postgresql": connection.cursor().connection.info.server_version},
        "results_per_burst": count,
        **{v: summary(r) for v, r in runs.items()},
    }  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        f"Storing a burst of {report['results_per_burst']} signed results on PostgreSQL "
        f"(medians of {report['one_worker']['rounds']} rounds; lost and stored twice: totals)",
        "",
        "| central workers | seconds | results/s | lost | stored twice | second writes that "
        "changed a row | refused as stored | put back |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"one_worker": "one", "two_workers": "two",
              "two_workers_one_killed": "two, one killed (SIGKILL) half-way"}  # fmt: skip
    for variant, label in labels.items():
        r = report[variant]
        lines.append(
            f"| {label} | {r['seconds']:.2f} | {r['per_second']:.0f} | {r['lost']} | "
            f"{r['stored_twice']} | {r['second_writes_that_changed']} | "
            f"{r['refused_as_stored']} | {r['put_back']} |"
        )
    kills = report["two_workers_one_killed"]["runs"]
    lines += ["", "Kills: " + "; ".join(
        f"after {k['killed_after_seconds']:.2f} s, {k['killed_at_stored']} stored, holding "
        f"{k['held_at_kill']}" for k in kills), ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.central",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--count", type=int, default=10000, help="results per burst")
    parser.add_argument("--rounds", type=int, default=3, help="bursts per variant")
    parser.add_argument("--out", type=Path, default=OUT / "central.json")
    parser.add_argument("--quiet", action="store_true", help="no progress, no table")
    args = parser.parse_args(argv)
    log = (lambda _: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    report = measure_here(args.count, args.rounds, log)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if not args.quiet:
        print(markdown(report))
        print(f"written: {args.out}")
    bad = any(report[v]["lost"] or report[v]["second_writes_that_changed"] for v in VARIANTS)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
