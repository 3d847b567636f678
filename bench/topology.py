"""The processes of a bench run: one Redis, our central worker and agents, the floor's workers."""

from pathlib import Path

from deploy.local import (  # noqa: F401 (ROOT, interrupt_on_signals re-exported)
    ROOT,
    Fleet,
    free_port,
    interrupt_on_signals,
    shielded,
    wait_for,
)

#: Same scheduling for agents and the floor's workers.
FAIR = ("--optimization", "fair")

PER_HOST_MAX = 10


def host_ips(prefix: str, count: int) -> list[str]:
    """127.<prefix>.x.y addresses: every one is a queue; none is ever contacted."""
    return [f"127.{prefix}.{i // 250}.{i % 250 + 1}" for i in range(count)]


class BenchFleet(Fleet):
    """Fleet plus the floor's raw Celery workers, on the same Redis (database 1)."""

    def __init__(self, run_dir: Path, shared_ips: list[str], per_host_ips: list[str]):
        self.port = free_port()
        self.broker = f"redis://127.0.0.1:{self.port}/0"
        self.floor_broker = f"redis://127.0.0.1:{self.port}/1"
        super().__init__(
            run_dir,
            {
                "REDIS_URL": self.broker,
                "FLOOR_BROKER_URL": self.floor_broker,
                "DATABASE_URL": f"sqlite:///{run_dir / 'bench.sqlite3'}",
                "CMDB_LOGLEVEL": "WARNING",
                # Bench hosts never get lost: keep the monitor out of the measurements' way.
                "CMDB_AGENT_LOST_AFTER": "600",
                # 1,010 queues register at start: collect on demand only (the bench measures it).
                "CMDB_COLLECT_ON_START": "0",
                # The bench's own agents, on this machine: their keys are accepted as they come.
                "CMDB_AUTO_ACCEPT": "all",
            },
        )
        self.shared_ips = shared_ips
        self.per_host_ips = per_host_ips

    def stop_all(self) -> list[str]:
        # Hundreds of processes: a second Ctrl-C must not leave half of them running.
        with shielded():
            return super().stop_all()

    def start_everything(self) -> list[str]:
        self.start_redis()
        self.start_central()
        nodes = []
        # One process for many hosts (the large sizes), same concurrency for both contenders.
        self.start_worker("agent-shared", "workers", self.shared_ips, "agent@shared", 2, *FAIR)
        self.start_worker("floor-shared", "bench.floor", self.shared_ips, "floor@shared", 2, *FAIR)
        nodes += ["agent@shared", "floor@shared"]
        for ip in self.per_host_ips:
            self.start_agent(ip, concurrency=1)
            self.start_worker(f"floor-{ip}", "bench.floor", [ip], f"floor@{ip}", 1, *FAIR)
            nodes += [f"agent@{ip}", f"floor@{ip}"]
        return nodes


def wait_for_nodes(apps, nodes: list[str], timeout: float = 180) -> None:
    def answered():
        seen = set()
        for app in apps:
            for reply in app.control.ping(timeout=1.0):
                seen.update(reply)
        return set(nodes) <= seen

    wait_for(answered, timeout, f"{len(nodes)} workers to answer pings", interval=1.0)
