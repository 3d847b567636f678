"""`python -m bench.client`: how fast the thin client (`cmdb`, client/) starts and answers.

The goal (issue 18): `cmdb run` returns its job id in under 3x the time of `python -c pass`
plus the API's own answer time (the same POST /api/jobs/ made from a warm process). Also
`cmdb --help`, and `cmdb run --wait` from the prompt to every host's output against
`manage.py run` then `manage.py check_task --wait`. Each figure is the median of 7 runs, on
its own Redis, SQLite database, central worker, gunicorn and one real agent per host.

Writes bench/out/client.json; prints markdown.
"""

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.topology import ROOT, free_port
from deploy.local import Fleet, interrupt_on_signals, shielded, wait_for

OUT = ROOT / "bench" / "out"
IPS = ["127.9.1.1", "127.9.1.2"]
RUNS = 7
GOAL = 3.0


def timed(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - started


def median(fn) -> float:
    return statistics.median(fn() for _ in range(RUNS))


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def api_post(url: str, token: str, body: dict) -> float:
    """POST /api/jobs/ from this (warm) process: the API's own answer time."""
    request = urllib.request.Request(f"{url}/api/jobs/", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Token {token}",
                                              "Content-Type": "application/json"})  # fmt: skip
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
    return time.perf_counter() - started


@contextlib.contextmanager
def web_fleet(run_dir: Path, ips: list[str]):
    """Its own Redis, SQLite database, central worker, one real agent per host (accepted as
    they come), gunicorn and a superuser's token: yields (the API's URL, the token, the
    server side's environment, with CMDB_USER)."""
    fleet = Fleet(run_dir, {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DATABASE_URL": f"sqlite:///{run_dir / 'bench.sqlite3'}",
        "CMDB_COLLECT_ON_START": "0", "CMDB_LOGLEVEL": "WARNING", "CMDB_AUTO_ACCEPT": "all",
    })  # fmt: skip
    os.environ.update({k: v for k, v in fleet.env.items()
                       if k.startswith(("CMDB_", "REDIS_", "DATABASE_", "DJANGO_"))})  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=fleet.env,
                   check=True)  # fmt: skip
    import django

    django.setup()
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from cmdb.celery import app
    from cmdb.hosts.models import Host

    try:
        fleet.start_redis()
        fleet.start_central()
        for ip in ips:
            fleet.start_agent(ip, 1)
        wait_for(lambda: len(app.control.ping(timeout=1.0)) >= len(ips) + 1, 90, "workers")
        wait_for(lambda: Host.objects.filter(ip__in=ips, key_state="accepted").count()
                 == len(ips), 60, "agents registered")  # fmt: skip
        user = User.objects.create_superuser("bench", "bench@example.invalid", None)
        token = Token.objects.create(user=user).key
        port = free_port()
        fleet.start_web(port, workers=2)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{url}/api/"), 60, "gunicorn", interval=0.2)
        api_post(url, token, {"command": "true", "hosts": ips[:1]})  # what workers load lazily
        yield url, token, {**os.environ, **fleet.env, "CMDB_USER": "bench"}
    finally:
        with shielded():
            fleet.stop_all()


def laptop_env(run_dir: Path, url: str, token: str) -> dict:
    """What `cmdb` has on a laptop: no Django settings, no database, no broker."""
    return {"PATH": os.environ["PATH"], "HOME": str(run_dir), "PYTHONPATH": str(ROOT),
            "CMDB_URL": url, "CMDB_TOKEN": token}  # fmt: skip


def main() -> None:
    interrupt_on_signals()
    run_dir = OUT / "client-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    with web_fleet(run_dir, IPS) as (url, token, server):
        laptop = laptop_env(run_dir, url, token)
        cmdb = [sys.executable, "-m", "client"]
        body = {"command": "true", "hosts": IPS[:1]}
        figures = {
            "python_c_pass": median(lambda: timed([sys.executable, "-c", "pass"], laptop)),
            "cmdb_help": median(lambda: timed([*cmdb, "--help"], laptop)),
            "api_answer": median(lambda: api_post(url, token, body)),
            "cmdb_run": median(lambda: timed([*cmdb, "run", "true", "--hosts", IPS[0]], laptop)),
            "cmdb_run_wait_1": median(lambda: timed(
                [*cmdb, "run", "hostname", "--hosts", IPS[0], "--wait"], laptop)),
            "cmdb_run_wait_2": median(lambda: timed(
                [*cmdb, "run", "hostname", "--hosts", *IPS, "--wait"], laptop)),
            "manage_run_then_check_wait_2": median(lambda: manage_loop(server, IPS)),
        }  # fmt: skip
    floor = figures["python_c_pass"] + figures["api_answer"]
    figures["run_ratio"] = figures["cmdb_run"] / floor
    figures["goal_ratio"] = GOAL
    figures["runs"] = RUNS
    OUT.mkdir(exist_ok=True)
    (OUT / "client.json").write_text(json.dumps(figures, indent=2))
    ms = {k: v * 1000 for k, v in figures.items() if isinstance(v, float) and k != "run_ratio"}
    print("| what (median of 7) | ms |\n| --- | ---: |")
    for name in ("python_c_pass", "cmdb_help", "api_answer", "cmdb_run", "cmdb_run_wait_1",
                 "cmdb_run_wait_2", "manage_run_then_check_wait_2"):  # fmt: skip
        print(f"| {name} | {ms[name]:.0f} |")
    verdict = "met" if figures["run_ratio"] < GOAL else "NOT met"
    print(f"\n`cmdb run` / (`python -c pass` + the API's answer) = {figures['run_ratio']:.2f} "
          f"(goal < {GOAL}: {verdict})")  # fmt: skip
    shutil.rmtree(run_dir, ignore_errors=True)


def manage_loop(env: dict, ips: list[str]) -> float:
    """Today's loop: `manage.py run`, then `manage.py check_task ID --wait`."""
    started = time.perf_counter()
    ran = subprocess.run(
        [sys.executable, "manage.py", "run", "hostname", "--hosts", *ips],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    ident = ran.stdout.split("task id: ")[1].split()[0]
    subprocess.run([sys.executable, "manage.py", "check_task", ident, "--wait"], cwd=ROOT,
                   env=env, check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
