"""`python -m bench.ssh`: `hostname` on N = 1, 10, 50, 200 SSH targets through this project (the
gateway), and through Ansible ad-hoc when ansible-core is in its venv (BENCH_ANSIBLE, default
~/.cache/fleet-cmdb-bench/ansible-venv/bin/ansible: ControlPersist and pipelining on, forks=N).

Real sshd processes (16 addresses each, one port) listen on 261 loopback addresses
(127.10.x.y), so each N has targets of its own:
its first round connects afresh ("cold"), the next ones reuse the gateway's connections ("warm",
as a job's tasks and a rolling job's batches do). Also the gateway's peak RSS during the fan-out.
Writes bench/out/ssh.json and prints a table.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.push import PeakRss
from bench.topology import ROOT, free_port
from deploy import sshd as sshd_server
from deploy.local import Fleet, interrupt_on_signals, shielded, wait_for

OUT = ROOT / "bench" / "out"
SIZES = [int(n) for n in os.environ.get("BENCH_SSH_SIZES", "1,10,50,200").split(",")]
REPS = int(os.environ.get("BENCH_SSH_REPS", "3"))
ANSIBLE = os.environ.get("BENCH_ANSIBLE") or str(
    Path.home() / ".cache/fleet-cmdb-bench/ansible-venv/bin/ansible"
)
#: The Ansible compared with, in a venv of its own (never the project's: its pins and size).
ANSIBLE_CORE = "ansible-core==2.18.6"


def prepare_ansible() -> str | None:
    """Why Ansible cannot be compared with (None: it can), its venv made and ansible-core
    installed there first when BENCH_ANSIBLE is not given and the venv has none (a minute)."""
    if os.access(ANSIBLE, os.X_OK):
        return None
    if os.environ.get("BENCH_ANSIBLE"):
        return f"BENCH_ANSIBLE={ANSIBLE} is not an executable"
    venv = Path(ANSIBLE).parent.parent
    for step in ([sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "-q", ANSIBLE_CORE]):  # fmt: skip
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode:
            return f"{' '.join(step)} failed: {done.stderr.strip()[-1000:]}"
    return None


def addresses(sizes: list[int]) -> dict[int, list[str]]:
    found, n = {}, 0
    for size in sizes:
        found[size] = [f"127.10.{(n + i) // 250}.{(n + i) % 250 + 1}" for i in range(size)]
        n += size
    return found


def ours(app, ips: list[str]) -> float:
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.dispatch import CommandRequest, dispatch_command
    from cmdb.jobs.models import HostTask

    started = time.perf_counter()
    job = dispatch_command(CommandRequest("hostname", ips, timeout=120, reach_timeout=600), app)
    pending = HostTask.objects.filter(job=job).exclude(state__in=State.terminal())
    wait_for(lambda: not pending.exists(), 600, "the job", interval=0.02)
    elapsed = time.perf_counter() - started
    bad = HostTask.objects.filter(job=job).exclude(state=State.OK)
    if bad.exists():
        raise RuntimeError(f"not ok: {list(bad.values_list('ip', 'state', 'error')[:5])}")
    return elapsed


def ansible(run_dir: Path, server, ips: list[str], user: str) -> float | None:
    if not os.access(ANSIBLE, os.X_OK):
        return None
    folder = run_dir / f"ansible-{len(ips)}"
    folder.mkdir(exist_ok=True)
    known = folder / "known_hosts"
    known.write_text("".join(f"[{ip}]:{server.port} {server.host_key_line}\n" for ip in ips))
    (folder / "inventory").write_text("[all]\n" + "".join(
        f"{ip} ansible_port={server.port} ansible_user={user} "
        f"ansible_ssh_private_key_file={server.client_key} "
        "ansible_python_interpreter=/usr/bin/python3\n" for ip in ips))  # fmt: skip
    (folder / "ansible.cfg").write_text(
        "[defaults]\nforks = {n}\ngathering = explicit\ninterpreter_python = /usr/bin/python3\n"
        "[ssh_connection]\npipelining = True\ncontrol_path_dir = {cp}\n"
        "ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={kh} "
        "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes\n".format(
            n=len(ips), cp=folder / "cp", kh=known)
    )  # fmt: skip
    env = {**os.environ, "ANSIBLE_CONFIG": str(folder / "ansible.cfg")}
    started = time.perf_counter()
    proc = subprocess.run([ANSIBLE, "all", "-i", str(folder / "inventory"), "-m", "command",
                           "-a", "hostname", "-o"], env=env, capture_output=True, text=True,
                          cwd=folder)  # fmt: skip
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ansible failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    interrupt_on_signals()
    if why := prepare_ansible():
        print(f"Ansible left out: {why}", flush=True)
    run_dir = OUT / "ssh-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    by_size = addresses(SIZES)
    every = [ip for ips in by_size.values() for ip in ips]
    user = sshd_server.bench_user()
    with sshd_server.sshd(run_dir / "sshd", every, free_port(), max_startups=2000) as server:
        fleet = Fleet(run_dir, {
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "DATABASE_URL": f"sqlite:///{run_dir / 'bench.sqlite3'}",
            "CMDB_COLLECT_ON_START": "0", "CMDB_LOGLEVEL": "WARNING",
            "CMDB_SSH_KEY": str(server.client_key),
            "CMDB_GATEWAY_KEY": str(run_dir / "gateway_key"),
        })  # fmt: skip
        prefixes = ("CMDB_", "REDIS_", "DATABASE_", "DJANGO_")
        os.environ.update({k: v for k, v in fleet.env.items() if k.startswith(prefixes)})
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT,
                       env=fleet.env, check=True)  # fmt: skip
        import django

        django.setup()
        from cmdb.celery import app
        from cmdb.hosts import ssh
        from cmdb.hosts.models import Host

        pem, fp = ssh.gateway_pem(), ssh.gateway_fingerprint()
        Host.objects.bulk_create([
            Host(ip=ip, mode="ssh", ssh_user=user, ssh_port=server.port,
                 ssh_host_key=server.host_key_line, agent_key=pem, key_state="accepted",
                 key_fingerprint=fp) for ip in every
        ])  # fmt: skip
        rows = []
        try:
            fleet.start_redis()
            fleet.start_central()
            gateway = fleet.start_gateway("gateway@bench")
            wait_for(lambda: len(app.control.ping(timeout=1.0)) >= 2, 90, "central and gateway")
            for size, ips in by_size.items():
                with PeakRss({"gateway": gateway.pid}) as mem:
                    times = [ours(app, ips) for _ in range(REPS)]
                ans = ansible(run_dir, server, ips, user)
                row = {"hosts": size, "cold_s": times[0],
                       "warm_s": statistics.median(times[1:]) if len(times) > 1 else None,
                       "ansible_s": ans, "gateway_peak_rss_mib": mem.peak["gateway"] / 2**20,
                       "gateway_growth_rss_mib": (mem.peak["gateway"]
                                                  - mem.baseline["gateway"]) / 2**20}  # fmt: skip
                if ans:
                    row["ansible_over_cold"] = ans / times[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            with shielded():
                fleet.stop_all()
    OUT.mkdir(exist_ok=True)
    (OUT / "ssh.json").write_text(json.dumps({"rows": rows}, indent=2))
    print(
        "| hosts | ours cold s | ours warm s | ansible s | ansible / ours cold | gateway peak MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ans = f"{r['ansible_s']:.2f}" if r["ansible_s"] else "n/a"
        ratio = f"{r['ansible_over_cold']:.1f}x" if r.get("ansible_over_cold") else "n/a"
        warm = f"{r['warm_s']:.3f}" if r["warm_s"] else "n/a"
        print(f"| {r['hosts']} | {r['cold_s']:.3f} | {warm} | {ans} | {ratio} | "
              f"{r['gateway_peak_rss_mib']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
