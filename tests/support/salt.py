"""A real Salt master, minion and salt-api on loopback, for the salt-mode tests.

Salt lives in its own virtual environment (never the project's: its pins and size), made under
a cache folder on first use; every config, key, socket, cache and log is under one temporary
folder. The master listens on 127.0.x.y with free ports; salt-api (rest_cherrypy, no TLS on
loopback) authenticates with eauth ``sharedsecret``, whose secret is generated per run.

    python -m tests.support.salt prepare   # make the venv now (`make test` does, before pytest)
    python -m tests.support.salt up        # a stack by hand, until Ctrl-C
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

#: The one Salt release the tests were written against, with salt-api's web server.
SALT_PACKAGES = ["salt==3008.4", "cherrypy"]
#: Outside the work tree and kept between runs: installing takes about 3 minutes.
VENV = Path(os.environ.get("CMDB_SALT_VENV") or Path.home() / ".cache" / "fleet-cmdb" / "salt-venv")
EAUTH_USER = "ops"


class SaltUnavailable(RuntimeError):
    """Salt could not be installed or started here; the message has the exact error."""


def venv_bin(name: str) -> Path:
    return VENV / "bin" / name


def prepare(venv: Path = VENV) -> Path:
    """The salt venv, made and installed when absent (about 3 minutes the first time)."""
    if (venv / "bin" / "salt-api").exists() and (venv / "bin" / "salt-master").exists():
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", *SALT_PACKAGES],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise SaltUnavailable(f"{' '.join(step)} failed: {done.stderr.strip()[-2000:]}")
    return venv


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class SaltStack:
    """One master, its minions and salt-api, under ``root``."""

    root: Path
    interface: str = "127.0.9.1"
    minion_ids: tuple[str, ...] = ("web01",)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self):
        self.publish_port = free_port(self.interface)
        self.ret_port = free_port(self.interface)
        self.api_port = free_port(self.interface)

    @property
    def api_url(self) -> str:
        return f"http://{self.interface}:{self.api_port}"

    def password_file(self) -> Path:
        """The secret in a 0600 file, as the server reads it (CMDB_SALT_API_PASSWORD_FILE)."""
        path = self.root / "salt-api.secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.secret + "\n")
        return path

    def _write(self, name: str, config: dict) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        # YAML is a superset of JSON: no YAML writer needed on this side.
        (folder / name.split("-")[0]).write_text(json.dumps(config, indent=1))
        return folder

    def _common(self, name: str) -> dict:
        base = self.root / "state" / name
        return {
            "root_dir": str(base),
            "pki_dir": str(base / "pki"),
            "sock_dir": str(base / "sock"),
            "cachedir": str(base / "cache"),
            "pidfile": str(base / f"{name}.pid"),
            "log_file": str(self.root / "logs" / f"{name}.log"),
            "log_level_logfile": "info",
            "user": "root",
        }

    def configure(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        master = self._common("master") | {
            "interface": self.interface,
            "publish_port": self.publish_port,
            "ret_port": self.ret_port,
            "auto_accept": True,
            "file_roots": {"base": [str(self.root / "srv")]},
            "sharedsecret": self.secret,
            "external_auth": {"sharedsecret": {EAUTH_USER: [".*", "@wheel", "@runner", "@jobs"]}},
            "netapi_enable_clients": ["local", "local_async", "runner", "wheel"],
            "rest_cherrypy": {
                "host": self.interface,
                "port": self.api_port,
                "disable_ssl": True,
            },
        }
        (self.root / "srv").mkdir(exist_ok=True)
        self._write("master", master)
        for mid in self.minion_ids:
            minion = self._common(f"minion-{mid}") | {
                "id": mid,
                "master": self.interface,
                "master_port": self.ret_port,
                "publish_port": self.publish_port,
                "acceptance_wait_time": 1,
                "random_reauth_delay": 0,
                "recon_default": 200,
                "recon_max": 1000,
                "grains_cache": False,
            }
            self._write(f"minion-{mid}", minion)

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "logs" / f"{name}.out", "ab")  # noqa: SIM115 - the child owns it
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        log.close()

    def start_master(self) -> None:
        self._start("master", [str(venv_bin("salt-master")), "-c", str(self.root / "master")])

    def start_api(self) -> None:
        self._start("api", [str(venv_bin("salt-api")), "-c", str(self.root / "master")])

    def start_minion(self, mid: str) -> None:
        folder = self.root / f"minion-{mid}"
        self._start(f"minion-{mid}", [str(venv_bin("salt-minion")), "-c", str(folder)])

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        # Salt daemons fork workers into the same session: end the whole group, by its id.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop_minion(self, mid: str) -> None:
        self.stop(f"minion-{mid}")

    def stop_all(self) -> None:
        # Every daemon told at once, then each waited for: a minion takes seconds to stop,
        # and one after the other was minutes at 10 minions (bench.loop).
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for name in list(self.procs):
            self.stop(name)

    # -- salt-api, plain HTTP (what the gateway does too, in its own code)

    def api(self, lowstate: dict, *, secret: str | None = None, timeout: float = 60) -> dict:
        body = {"eauth": "sharedsecret", "username": EAUTH_USER,
                "password": self.secret if secret is None else secret, **lowstate}  # fmt: skip
        req = urllib.request.Request(
            self.api_url + "/run", data=json.dumps([body]).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)

    def _log_tail(self) -> str:
        out = []
        for path in sorted((self.root / "logs").glob("*")):
            text = path.read_text(errors="replace")[-3000:]
            out.append(f"--- {path.name}\n{text}")
        return "\n".join(out)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until every minion answers test.ping through salt-api."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SaltUnavailable(f"{name} exited {proc.returncode}\n{self._log_tail()}")
            try:
                got = self.api({"client": "local", "tgt": ",".join(self.minion_ids),
                                "tgt_type": "list", "fun": "test.ping", "timeout": 5})  # fmt: skip
                answered = got.get("return", [{}])[0]
                if all(answered.get(m) is True for m in self.minion_ids):
                    return
                last = repr(answered)
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last = repr(exc)
            time.sleep(1)
        raise SaltUnavailable(f"minions never answered test.ping: {last}\n{self._log_tail()}")

    def up(self) -> SaltStack:
        prepare()
        self.configure()
        self.start_master()
        self.start_api()
        for mid in self.minion_ids:
            self.start_minion(mid)
        try:
            self.wait_ready()
        except BaseException:
            self.stop_all()
            raise
        return self


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"]:
        print(prepare())
        return 0
    if argv[:1] == ["up"]:  # by hand: a stack until Ctrl-C
        import tempfile

        stack = SaltStack(Path(tempfile.mkdtemp(prefix="salt-"))).up()
        print(stack.api_url, stack.secret, stack.root, flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            stack.stop_all()
            shutil.rmtree(stack.root, ignore_errors=True)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
