"""`python -m bench.loop`: the operator's whole loop as felt (issue 18), ours against Ansible and
Salt in one run. `hostname` on N = 1 and 10 hosts, timed from the shell prompt until every
host's output is printed (the command has exited), median of 7 rounds, interleaved:

- `cmdb run hostname --hosts ... --wait`: the thin client against gunicorn (bench.client's
  fleet: its own Redis, SQLite, central worker, one real agent per host on 127.11.0.x);
- `manage.py run hostname --hosts ... --wait`, on the server;
- `ansible all -m command -a hostname` over a local sshd on the same addresses (bench.ssh's:
  ansible-core in its own venv, ControlPersist and pipelining on, forks = N);
- `salt -L <minions> cmd.run hostname` with one master and N minions (tests.support.salt's
  venv; left out, with the reason, when it cannot be prepared).

Goal: ours at least 10x faster than Ansible and 3x faster than Salt's CLI at each N.
BENCH_LOOP_BEFORE=<another checkout> times that checkout's thin client too ("cmdb_before", the
same server): a change to the client measured before and after in one run.
Writes bench/out/loop.json; prints markdown.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import ssh
from bench.client import laptop_env, web_fleet
from bench.topology import ROOT, free_port, host_ips, interrupt_on_signals
from deploy import sshd as sshd_server
from tests.support import salt

OUT = ROOT / "bench" / "out"
SIZES = [int(n) for n in os.environ.get("BENCH_LOOP_SIZES", "1,10").split(",")]
ROUNDS = int(os.environ.get("BENCH_LOOP_ROUNDS", "7"))
GOALS = {"ansible": 10.0, "salt": 3.0}
IPS = host_ips("11", max(SIZES))
BEFORE = os.environ.get("BENCH_LOOP_BEFORE")


def timed(argv: list[str], env: dict, expect: list[str], cwd: Path = ROOT) -> float:
    """Seconds from start to exit of ``argv``, which must succeed and print each of
    ``expect`` (every host answered, not merely a command that returned)."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    elapsed = time.perf_counter() - started
    missing = [e for e in expect if e not in done.stdout]
    if done.returncode or missing:
        raise RuntimeError(f"{argv[:4]} exited {done.returncode}, missing {missing}: "
                           f"{done.stdout[-1500:]} {done.stderr[-1500:]}")  # fmt: skip
    return elapsed


def ok_line(size: int) -> str:
    """What check prints once each of ``size`` hosts ended ok (client/report.py)."""
    return f"on {size} host(s): {size} ok"


def salt_stack(run_dir: Path, size: int):
    """A Salt master and ``size`` minions, or the reason there cannot be."""
    try:
        salt.prepare()
        ids = tuple(f"m{i:02d}" for i in range(1, size + 1))
        return salt.SaltStack(run_dir / "salt", interface="127.11.9.1", minion_ids=ids).up()
    except (salt.SaltUnavailable, OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:500]}"


def rounds(run_dir: Path, url: str, token: str, server_env: dict, sshd, user: str,
           stack) -> dict:  # fmt: skip
    laptop = laptop_env(run_dir, url, token)
    cmdb = [sys.executable, "-m", "client", "run", "hostname"]
    manage = [sys.executable, "manage.py", "run", "hostname"]
    report = {}
    for size in SIZES:
        ips = IPS[:size]
        times: dict[str, list[float]] = {"cmdb": [], "cmdb_before": [], "manage": [],
                                         "ansible": [], "salt": []}  # fmt: skip
        for _ in range(ROUNDS):  # interleaved: the machine's drift is shared by all
            hosts = ["--hosts", *ips, "--wait"]
            times["cmdb"].append(timed([*cmdb, *hosts], laptop, [ok_line(size)]))
            if BEFORE:
                times["cmdb_before"].append(timed([*cmdb, *hosts], {**laptop, "PYTHONPATH": BEFORE},
                                                  [ok_line(size)]))  # fmt: skip
            times["manage"].append(timed([*manage, *hosts], server_env, [*ips]))
            if os.access(ssh.ANSIBLE, os.X_OK):
                times["ansible"].append(ssh.ansible(run_dir, sshd, ips, user))
            if not isinstance(stack, str):
                minions = list(stack.minion_ids[:size])
                argv = [str(salt.venv_bin("salt")), "-c", str(stack.root / "master"), "-L",
                        ",".join(minions), "cmd.run", "hostname"]  # fmt: skip
                times["salt"].append(timed(argv, os.environ.copy(), minions))
        row = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)}
               for name, v in times.items() if v}  # fmt: skip
        for rival in ("ansible", "salt"):
            if rival in row:
                for ours in ("cmdb", "manage"):
                    row[f"{rival}_over_{ours}"] = row[rival]["median"] / row[ours]["median"]
        report[str(size)] = row
        print(json.dumps({"hosts": size, **row}), flush=True)
    return report


def _seconds(row: dict, name: str) -> str:
    return f"{row[name]['median']:.3f}" if name in row else "n/a"


def _ratio(row: dict, ours: str, rival: str) -> str:
    value = row.get(f"{rival}_over_{ours}")
    if value is None:
        return "n/a"
    return f"{value:.1f}x" + ("" if value >= GOALS[rival] else " (goal not met)")


def markdown(report: dict) -> str:
    lines = ["| hosts | `cmdb run --wait` s | `manage.py run --wait` s | Ansible s | Salt CLI s "
             "| Ansible / cmdb | Salt / cmdb | Ansible / manage.py | Salt / manage.py |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for size in SIZES:
        r = report["sizes"][str(size)]
        seconds = " | ".join(_seconds(r, n) for n in ("cmdb", "manage", "ansible", "salt"))
        ratios = " | ".join(_ratio(r, ours, rival) for ours in ("cmdb", "manage")
                            for rival in ("ansible", "salt"))  # fmt: skip
        lines.append(f"| {size} | {seconds} | {ratios} |")
    for size in SIZES:
        r = report["sizes"][str(size)]
        if "cmdb_before" in r:
            lines.append(f"\n`cmdb run --wait` at {size} host(s), BENCH_LOOP_BEFORE's client: "
                         f"{r['cmdb_before']['median']:.3f} s, this one's {r['cmdb']['median']:.3f}"
                         " s")  # fmt: skip
    for rival, why in report["left_out"].items():
        lines.append(f"\n{rival} left out: {why}")
    return "\n".join(lines)


def main() -> None:
    interrupt_on_signals()
    run_dir = OUT / "loop-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    left_out = {}
    if why := ssh.prepare_ansible():
        left_out["ansible"] = why
    user = sshd_server.bench_user()
    stack = salt_stack(run_dir, max(SIZES))
    if isinstance(stack, str):
        left_out["salt"] = stack
    try:
        with (
            sshd_server.sshd(run_dir / "sshd", IPS, free_port()) as sshd,
            web_fleet(run_dir, IPS) as (url, token, server_env),
        ):
            sizes = rounds(run_dir, url, token, server_env, sshd, user, stack)
    finally:
        if not isinstance(stack, str):
            stack.stop_all()
    report = {"rounds": ROUNDS, "goals": GOALS, "sizes": sizes, "left_out": left_out}
    OUT.mkdir(exist_ok=True)
    (OUT / "loop.json").write_text(json.dumps(report, indent=2))
    print(markdown(report))
    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
