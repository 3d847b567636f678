"""The thin client (`cmdb`, client/) against a real gunicorn, a real broker and real agents:
what it prints and its exit codes are manage.py's; its config keeps the token to its owner."""

import contextlib
import os
import pty
import stat
import subprocess
import sys
import threading
import time

import pytest
from rest_framework.authtoken.models import Token

from cmdb.hosts.models import Host
from tests.support.api import make_user
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS, ROOT, free_port
from tests.support.web import served

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(fleet, process_env, tmp_path):
    with served(process_env, tmp_path / "web") as url:
        yield url


@pytest.fixture
def home(tmp_path):
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def cmdb(home):
    """Run `cmdb ...` (python -m client, as the console script does) as a laptop would: no
    Django settings, no database, no broker in its environment; HOME a fresh folder."""

    def run(*args: str, env: dict | None = None, stdin: str | None = None):
        base = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "client", *args], cwd=home,
                              env={**base, **(env or {})}, capture_output=True, text=True,
                              input=stdin, timeout=120)  # fmt: skip

    return run


@pytest.fixture
def logged_in(cmdb, server, cli_user):
    """`cmdb login URL --token -` as the superuser manage.py acts as (they see the same): the
    token from stdin, never in ps."""
    token = Token.objects.create(user=cli_user).key
    done = cmdb("login", server, "--token", "-", stdin=token + "\n")
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    return cmdb


def test_a_token_on_the_command_line_still_works_but_is_warned_of(cmdb, server, cli_user):
    token = Token.objects.create(user=cli_user).key
    done = cmdb("login", server, "--token", token)
    assert done.returncode == 0, done.stderr
    assert "seen by everyone on this machine (ps)" in done.stderr and "--token -" in done.stderr
    assert token not in done.stdout + done.stderr
    empty = cmdb("login", server, "--token", "-", stdin="\n")
    assert empty.returncode == 2 and "no token read from stdin" in empty.stderr


@pytest.fixture
def agents(fleet):
    return [make_host(ip, hostname=f"agent-{i}") for i, ip in enumerate(AGENT_IPS, 1)]


#: A host in the inventory whose agent never runs.
SILENT = "127.0.1.60"


def job_id(proc) -> str:
    first = proc.stdout.splitlines()[0]
    assert first.startswith("task id: "), proc.stdout
    return first.removeprefix("task id: ")


def test_run_wait_check_and_rerun_print_what_manage_py_prints(logged_in, agents, manage):
    cmdb = logged_in
    ran = cmdb("run", "echo hi", "--hosts", ",".join(AGENT_IPS), "--wait")
    assert ran.returncode == 0, ran.stderr
    ident = job_id(ran)
    check = cmdb("check", ident)
    server_side = manage("check_task", ident)
    assert (check.returncode, server_side.returncode) == (0, 0)
    assert check.stdout == server_side.stdout
    assert ran.stdout == f"task id: {ident}\n" + server_side.stdout
    assert "2 hosts: 127.0.1.1-2" in check.stdout
    for extra in (["--no-group"], ["--hosts-only"], ["--format", "csv"], ["--state", "ok"]):
        assert cmdb("check", ident, *extra).stdout == manage("check_task", ident, *extra).stdout

    # One host never answers: exit 1 from both, and a re-run of the failed goes to it alone.
    make_host(SILENT, with_agent=False)
    failing = cmdb("run", "echo hi", "--hosts", f"{AGENT_IPS[0]},{SILENT}", "--reach-timeout",
                   "2", "--wait")  # fmt: skip
    assert failing.returncode == 1, failing.stderr
    assert "never seen" in failing.stderr or "offline" in failing.stderr  # warned at once
    bad = job_id(failing)
    assert cmdb("check", bad).stdout == manage("check_task", bad).stdout
    assert manage("check_task", bad).returncode == 1
    failed_only = cmdb("check", bad, "--failed", "--hosts-only")
    assert failed_only.stdout == manage("check_task", bad, "--failed", "--hosts-only").stdout

    again = cmdb("rerun", bad, "--failed")
    assert again.returncode == 0, again.stderr
    rerun = job_id(again)
    hosts = cmdb("check", rerun, "--wait", "--hosts-only").stdout
    assert hosts == manage("check_task", rerun, "--hosts-only").stdout == f"unreachable: {SILENT}\n"
    assert cmdb("check", rerun, "--json").returncode == 1

    listed = cmdb("jobs")
    assert listed.returncode == 0
    assert listed.stdout == manage("jobs").stdout
    assert cmdb("jobs", "--failed").stdout == manage("jobs", "--failed").stdout
    assert [line[:8] for line in listed.stdout.splitlines()[1:4]] == [rerun[:8], bad[:8],
                                                                      ident[:8]]  # fmt: skip
    assert cmdb("cancel", ident).stdout == "nothing to cancel: every host task has finished\n"


def test_refusals_are_manage_pys_and_exit_2(logged_in, agents, manage):
    cmdb = logged_in
    unknown = cmdb("run", "true", "--hosts", "127.0.1.50,nosuchhost")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("nothing dispatched:\n  ")
    assert "127.0.1.50" in unknown.stderr and "nosuchhost" in unknown.stderr
    assert cmdb("check", "00000000-0000-0000-0000-000000000000").returncode == 2
    assert manage("check_task", "00000000-0000-0000-0000-000000000000").returncode == 2


def test_hosts_are_listed_added_and_removed_as_manage_py_does(logged_in, agents, manage):
    cmdb = logged_in
    added = cmdb("hosts", "add", "127.99.0.1", "--hostname", "db1")
    assert (added.returncode, added.stdout) == (0, "added: 127.99.0.1\n")
    assert cmdb("hosts", "add", "127.99.0.1").stdout == "already known: 127.99.0.1\n"
    assert Host.objects.get(ip="127.99.0.1").hostname == "db1"
    assert cmdb("hosts").stdout == manage("hosts", "list").stdout
    bad = cmdb("hosts", "add", "127.99.0.300")
    assert bad.returncode == 2 and "ip" in bad.stderr
    missing = cmdb("hosts", "remove", "127.99.0.1", "127.99.0.2")
    assert missing.returncode == 2 and "127.99.0.2" in missing.stderr
    assert Host.objects.filter(ip="127.99.0.1").exists()  # nothing removed
    assert cmdb("hosts", "remove", "127.99.0.1").stdout == "removed 1 host(s)\n"
    assert not Host.objects.filter(ip="127.99.0.1").exists()


def test_login_with_a_password_keeps_the_token_readable_by_its_owner_alone(cmdb, server, home):
    bob = make_user("jobs.view_job", username="bob")
    bob.set_password("s3cret-pw")
    bob.save()
    done = cmdb("login", server, "--username", "bob", stdin="s3cret-pw\n")
    assert done.returncode == 0, done.stderr
    assert "as bob" in done.stdout and "s3cret-pw" not in done.stdout + done.stderr
    config = home / ".config" / "cmdb" / "config"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert Token.objects.get(user__username="bob").key in config.read_text()
    assert cmdb("jobs").returncode == 0

    config.chmod(0o644)  # as a careless copy would leave it
    refused = cmdb("jobs")
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
    config.chmod(0o600)
    wrong = cmdb("login", server, "--username", "bob", stdin="guess\n")
    assert wrong.returncode == 2 and "wrong username or password" in wrong.stderr


def test_a_symlinked_config_is_refused(cmdb, home, tmp_path):
    elsewhere = tmp_path / "other"
    elsewhere.write_text('{"url": "http://127.0.0.1:9", "token": "x"}')
    elsewhere.chmod(0o600)
    (home / ".config" / "cmdb").mkdir(parents=True)
    (home / ".config" / "cmdb" / "config").symlink_to(elsewhere)
    refused = cmdb("jobs")
    assert refused.returncode == 2 and "not a regular file of yours" in refused.stderr


def test_a_bad_token_and_an_unreachable_server_are_said_plainly(cmdb, server):
    bad = cmdb("jobs", env={"CMDB_URL": server, "CMDB_TOKEN": "0" * 40})
    assert bad.returncode == 2
    assert "refused the token" in bad.stderr and "cmdb login" in bad.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    down = cmdb("run", "true", "--hosts", "127.0.1.1",
                env={"CMDB_URL": nobody, "CMDB_TOKEN": "x"})  # fmt: skip
    assert down.returncode == 3
    assert f"cannot reach the server at {nobody}" in down.stderr
    assert "Traceback" not in down.stderr
    assert cmdb("jobs").returncode == 2  # never logged in: says how
    assert "cmdb login" in cmdb("jobs").stderr


def test_completion_scripts_load_in_their_shells(cmdb):
    script = cmdb("completion", "bash").stdout
    assert "rerun" in script and "--hosts" in script
    loaded = subprocess.run(["bash", "-c", f'{script}\ncomplete -p cmdb'], capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert loaded.returncode == 0 and "_cmdb" in loaded.stdout, loaded.stderr
    assert cmdb("completion", "zsh").stdout.startswith("#compdef cmdb")


# --- --wait: the job's events pushed (Server-Sent Events), not polled -------------------------
SLOW = "for i in 1 2 3 4 5; do echo line $i; sleep 1; done"


class Streamed:
    """A `cmdb` process whose stdout lines are read as they come, with when each came."""

    def __init__(self, home, env: dict, *args: str):
        base = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "client", *args], cwd=home,
                                     env={**base, **env}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def wait(self, timeout: float = 90) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(5)
        self.ended = time.monotonic()
        self.stderr = self.proc.stderr.read()
        return code

    @property
    def stdout(self) -> str:
        return "".join(line for _, line in self.lines)

    def first(self, text: str) -> float:
        return next(at for at, line in self.lines if text in line)


def on_a_terminal(home, env: dict, *args: str) -> tuple[int, str]:
    """`cmdb ...` with its stdout a terminal (a pty): its exit code and what it showed."""
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(ROOT)}
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "client", *args], cwd=home,
                            env={**base, **env}, stdin=subprocess.DEVNULL, stdout=sub,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(sub)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
        while chunk := os.read(main, 65536):
            shown += chunk
    os.close(main)
    return proc.wait(60), shown.decode().replace("\r\n", "\n")


def laptop_env(url: str, user) -> dict:
    return {"CMDB_URL": url, "CMDB_TOKEN": Token.objects.get_or_create(user=user)[0].key}


def assert_streamed_then_checked(run: Streamed, ip: str, cmdb, env: dict) -> str:
    """Each line once, prefixed by its host, seen seconds before the end; then exactly what
    `cmdb check` prints. The job's id."""
    text = run.stdout
    ident = text.splitlines()[0].removeprefix("task id: ")
    for i in range(1, 6):
        shown = [line for _, line in run.lines if line.endswith(f"| line {i}\n")]
        assert len(shown) == 1 and shown[0].startswith(f"{ip} "), text
    assert run.ended - run.first("| line 1") > 2.5, text  # pushed while the command ran
    assert f"{ip} ok, exit 0, " in text, text
    check = cmdb("check", ident, env=env)
    assert check.returncode == 0, check.stderr
    assert text.endswith(check.stdout), text
    return ident


def test_run_wait_streams_each_hosts_output_as_it_comes_then_prints_check(
    logged_in, agents, server, cli_user, home
):
    ip = AGENT_IPS[0]
    env = laptop_env(server, cli_user)
    run = Streamed(home, env, "run", SLOW, "--hosts", ip, "--wait", "--stream")
    assert run.wait() == 0, run.stderr
    ident = assert_streamed_then_checked(run, ip, logged_in, env)

    # check --wait on a job still running: the same pushed lines, then check's text.
    later = logged_in("run", SLOW, "--hosts", ip, env=env)
    follow = Streamed(home, env, "check", job_id(later), "--wait", "--stream")
    assert follow.wait() == 0, follow.stderr
    assert "| line 1\n" in follow.stdout and follow.stdout.endswith(
        logged_in("check", job_id(later), env=env).stdout)  # fmt: skip

    # On a terminal, streamed without being asked: how the host ended, then check's text.
    code, shown = on_a_terminal(home, env, "run", "echo hi; exit 3", "--hosts", ip, "--wait")
    assert code == 1, shown
    ran = shown.splitlines()[0].removeprefix("task id: ")
    assert f"\n{ip} failed, exit 3, " in shown, shown
    assert shown.endswith(logged_in("check", ran, env=env).stdout), shown

    # Not streamed (a pipe, no --stream): the results alone, as `cmdb check` prints them.
    quiet = logged_in("run", "echo out; exit 4", "--hosts", ip, "--wait", env=env)
    assert quiet.returncode == 1, quiet.stderr
    assert quiet.stdout == f"task id: {job_id(quiet)}\n" + logged_in(
        "check", job_id(quiet), env=env).stdout  # fmt: skip
    # Given up waiting: exit 3, and what check prints of the job as it stands.
    short = logged_in("check", ident, "--wait", "--wait-timeout", "0", env=env)
    assert short.returncode == 0  # that one had ended: nothing to wait for
    slow = logged_in("run", SLOW, "--hosts", ip, "--wait", "--wait-timeout", "1", env=env)
    assert slow.returncode == 3, slow.stdout + slow.stderr
    assert "1 running" in slow.stdout or "1 pending" in slow.stdout, slow.stdout


@pytest.mark.parametrize("server_env", [
    # Each answer ends after a second: the client asks again from the last event id read.
    {"CMDB_EVENTS_STREAM_SECONDS": "1"},
    # No stream may be opened (429): the client polls, and prints the same.
    {"CMDB_EVENTS_STREAMS_PER_USER": "0"},
])  # fmt: skip
def test_run_wait_reconnects_or_polls_and_misses_nothing(
    fleet, agents, process_env, tmp_path, cli_user, home, cmdb, server_env
):
    with served({**process_env, **server_env}, tmp_path / "web-limited") as url:
        env = laptop_env(url, cli_user)
        run = Streamed(home, env, "run", SLOW, "--hosts", AGENT_IPS[1], "--wait", "--stream")
        assert run.wait() == 0, run.stderr
        if "CMDB_EVENTS_STREAM_SECONDS" in server_env:
            assert_streamed_then_checked(run, AGENT_IPS[1], cmdb, env)
        else:  # polled: nothing streamed, the results as check prints them
            ident = job_id(run)
            assert "| line" not in run.stdout
            assert run.stdout == f"task id: {ident}\n" + cmdb("check", ident, env=env).stdout
