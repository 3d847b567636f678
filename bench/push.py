"""`python -m bench.push`: a 200 MB push to three local hosts against `cp` on the same disk.

Also the peak memory of the agents and of the server side (the process that uploads, and the
central worker) while it runs. Writes bench/out/push.json and prints a summary.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import psutil

from bench.topology import ROOT, free_port
from deploy.local import Fleet, interrupt_on_signals, shielded, wait_for

OUT = ROOT / "bench" / "out"
IPS = ["127.9.0.1", "127.9.0.2", "127.9.0.3"]
SIZE_MB = int(os.environ.get("BENCH_PUSH_MB", "200"))


class PeakRss:
    """Samples the RSS of process trees every 20 ms; keeps each tree's peak."""

    def __init__(self, roots: dict[str, int]):
        self.roots, self.peak = roots, dict.fromkeys(roots, 0)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def rss(self, pid: int) -> int:
        # A worker's pool children are the worker; this process's children are the fleet.
        try:
            proc = psutil.Process(pid)
            tree = [proc] if pid == os.getpid() else [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in tree)
        except psutil.Error:
            return 0

    def run(self):
        while not self.done.is_set():
            for name, pid in self.roots.items():
                self.peak[name] = max(self.peak[name], self.rss(pid))
            time.sleep(0.02)

    def __enter__(self):
        self.baseline = {name: self.rss(pid) for name, pid in self.roots.items()}
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def main() -> None:
    # Ctrl-C and SIGTERM both end in the finally below, which stops what this run started.
    interrupt_on_signals()
    run_dir = OUT / "push-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    fleet = Fleet(run_dir, {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DATABASE_URL": f"sqlite:///{run_dir / 'bench.sqlite3'}",
        "CMDB_COLLECT_ON_START": "0", "CMDB_LOGLEVEL": "WARNING",
        # The bench's own agents, on this machine: their keys are accepted as they come.
        "CMDB_AUTO_ACCEPT": "all",
    })  # fmt: skip
    os.environ.update(
        {
            k: v
            for k, v in fleet.env.items()
            if k.startswith(("CMDB_", "REDIS_", "DATABASE_", "DJANGO_"))
        }
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=fleet.env,
                   check=True)  # fmt: skip
    import django

    django.setup()
    from cmdb.celery import app
    from cmdb.files.uploads import prepare_push
    from cmdb.hosts.models import Host
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.choices import JobKindChoices
    from cmdb.jobs.dispatch import CommandRequest, dispatch_command
    from cmdb.jobs.models import HostTask

    source = run_dir / "payload.bin"
    with open(source, "wb") as f:
        for _ in range(SIZE_MB):
            f.write(os.urandom(1 << 20))
    try:
        fleet.start_redis()
        central = fleet.start_central()
        agents = {}
        for ip in IPS:
            (run_dir / ip).mkdir()
            agents[ip] = fleet.start_agent(ip, 1, {"CMDB_AGENT_ROOT": str(run_dir / ip)})
            Host.objects.get_or_create(ip=ip, defaults={"agent_name": f"agent@{ip}"})
        wait_for(lambda: len(app.control.ping(timeout=1.0)) >= len(IPS) + 1, 90, "workers")

        started = time.perf_counter()
        subprocess.run(["cp", str(source), str(run_dir / "copy.bin")], check=True)
        os.sync()
        cp_s = time.perf_counter() - started

        roots = {"central worker": central.pid, "server process (upload)": os.getpid(),
                 "redis (holds the chunks)": fleet.processes["redis"].pid}  # fmt: skip
        roots.update({f"agent {ip}": p.pid for ip, p in agents.items()})
        with PeakRss(roots) as mem:
            started = time.perf_counter()
            params = prepare_push(app, str(source), "/opt/payload.bin")
            upload_s = time.perf_counter() - started
            job = dispatch_command(
                CommandRequest(kind=JobKindChoices.PUSH, targets=IPS, params=params), app
            )
            pending = HostTask.objects.filter(job=job, state__in=State.active())
            wait_for(lambda: not pending.exists(), 600, "the push", interval=0.05)
            os.sync()
            push_s = time.perf_counter() - started
        states = list(HostTask.objects.filter(job=job).values_list("state", flat=True))
        api = api_push(fleet, run_dir, agents)
    finally:
        with shielded():
            fleet.stop_all()
    mib = 1 << 20
    result = {
        "size_mb": SIZE_MB, "hosts": len(IPS), "states": states,
        "cp_seconds": cp_s, "cp_mb_s": SIZE_MB / cp_s,
        "push_seconds": push_s, "upload_seconds": upload_s,
        "push_mb_s_per_host": SIZE_MB / push_s, "push_mb_s_total": SIZE_MB * len(IPS) / push_s,
        "peak_rss_mib": {k: v / mib for k, v in mem.peak.items()},
        "growth_rss_mib": {k: (mem.peak[k] - mem.baseline[k]) / mib for k in roots},
        "api": api,
    }  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "push.json").write_text(json.dumps(result, indent=2))
    print(
        f"push of {SIZE_MB} MB to {len(IPS)} hosts: {push_s:.2f} s "
        f"({result['push_mb_s_per_host']:.0f} MB/s per host, "
        f"{result['push_mb_s_total']:.0f} MB/s written in all; upload {upload_s:.2f} s); "
        f"cp on the same disk: {cp_s:.2f} s ({result['cp_mb_s']:.0f} MB/s); states {states}"
    )
    for name in roots:
        print(
            f"  {name}: peak {result['peak_rss_mib'][name]:.0f} MiB "
            f"(+{result['growth_rss_mib'][name]:.1f} MiB)"
        )
    print(
        f"the same through the API (curl -F to gunicorn, another {SIZE_MB} MB file): "
        f"{api['push_seconds']:.2f} s ({SIZE_MB / api['push_seconds']:.0f} MB/s per host; "
        f"upload answered 202 in {api['upload_seconds']:.2f} s); states {api['states']}; "
        f"web worker peak {api['peak_rss_mib']['web']:.0f} MiB "
        f"(+{api['growth_rss_mib']['web']:.1f} MiB)"
    )
    shutil.rmtree(run_dir, ignore_errors=True)


def api_push(fleet: Fleet, run_dir, agents: dict) -> dict:
    """POST /api/jobs/push/ with curl (a streamed multipart upload) to gunicorn, as a script
    would; the web worker's memory must not grow with the file."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.models import HostTask, Job

    source = run_dir / "payload-api.bin"
    with open(source, "wb") as f:
        for _ in range(SIZE_MB):
            f.write(os.urandom(1 << 20))
    user = User.objects.create_superuser("bench", "bench@example.invalid", "unused")
    token = Token.objects.create(user=user).key
    port = free_port()
    web = fleet.start_web(port, workers=1)
    url = f"http://127.0.0.1:{port}/api/jobs/push/"
    wait_for(lambda: _answers(url), 60, "gunicorn", interval=0.2)
    hosts = [arg for ip in IPS for arg in ("-F", f"hosts={ip}")]
    with PeakRss({"web": web.pid}) as mem:
        started = time.perf_counter()
        answer = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-H", f"Authorization: Token {token}",
             "-F", f"file=@{source}", "-F", "dest=/opt/payload-api.bin", *hosts, url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        upload_s = time.perf_counter() - started
        job = Job.objects.get(pk=json.loads(answer.stdout)["id"])
        pending = HostTask.objects.filter(job=job, state__in=State.active())
        wait_for(lambda: not pending.exists(), 600, "the API push", interval=0.05)
        os.sync()
        push_s = time.perf_counter() - started
    mib = 1 << 20
    return {
        "push_seconds": push_s, "upload_seconds": upload_s,
        "states": list(HostTask.objects.filter(job=job).values_list("state", flat=True)),
        "peak_rss_mib": {"web": mem.peak["web"] / mib},
        "growth_rss_mib": {"web": (mem.peak["web"] - mem.baseline["web"]) / mib},
    }  # fmt: skip


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 401 or 405: the app answers
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
