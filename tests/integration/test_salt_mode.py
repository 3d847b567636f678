"""Salt mode through a real salt-master, salt-minions and salt-api on loopback
(tests/support/salt.py) and the salt gateway (`python -m gateway --salt`): hosts added with
`hosts add --mode salt --minion ID` while it runs are served, with the same jobs, states,
results and stored facts as through an agent."""

import os
import sys
import time

import psutil
import pytest

from cmdb.assets.models import Asset, HostFacts
from cmdb.hosts.models import Host
from cmdb.jobs.models import HostTask
from tests.support import salt
from tests.support.cli import ID_LINE, wait_job
from tests.support.factories import make_host
from tests.support.fleet import wait_for
from workers.saltapi import local

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

WEB01, WEB02, BAD_AUTH, NO_SUCH, MOVED = (f"127.0.1.{n}" for n in range(90, 95))
GOOD, BAD = "salt-gateway@salt-tests", "salt-gateway-bad@salt-tests"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("salt")
    try:
        stack = salt.SaltStack(root, minion_ids=("web01", "web02")).up()
    except salt.SaltUnavailable as exc:
        pytest.fail(f"salt could not run here: {exc}")
    yield stack
    stack.stop_all()


@pytest.fixture(scope="module")
def salt_env(stack, tmp_path_factory) -> dict:
    """The gateway's and manage.py's: one gateways' key (what `hosts add` accepts for a salt
    host is what the gateway signs with), salt-api and its credentials."""
    keys = tmp_path_factory.mktemp("gateway-keys")
    return {"CMDB_GATEWAY_KEY": str(keys / "gateway_key"), "CMDB_SALT_API_URL": stack.api_url,
            "CMDB_SALT_API_USER": salt.EAUTH_USER, "CMDB_SALT_API_EAUTH": "sharedsecret",
            "CMDB_SALT_API_PASSWORD_FILE": str(stack.password_file()),
            "CMDB_SALT_REPLY_TIMEOUT": "3", "CMDB_SALT_CONCURRENCY": "4"}  # fmt: skip


def _log(fleet, name: str = "salt-gateway") -> str:
    path = fleet.logs / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def gateway(fleet, salt_env):
    # No salt-mode host yet: it starts on its idle queue and must pick hosts up as they come.
    fleet.start_salt_gateway(GOOD, salt_env)
    wait_for(lambda: "ready." in _log(fleet), 60, "the salt gateway to start")
    yield fleet
    fleet.stop("salt-gateway")


def _served(log: str, ip: str) -> bool:
    # Each test's database starts empty: the gateway may have let the host go in between.
    return log.rfind(f"now serving {ip} through salt") > log.rfind(f"no longer serving {ip} ")


@pytest.fixture
def add(manage, gateway, salt_env):
    """`hosts add IP --mode salt --minion ID`, as an operator does it, and wait until the
    running gateway serves the host's queue (it reads the inventory every few seconds)."""

    def run(ip: str, minion: str, log: str = "salt-gateway"):
        out = manage("hosts", "add", ip, "--mode", "salt", "--minion", minion, env=salt_env)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: _served(_log(gateway, log), ip), 30,
                 f"the salt gateway to serve {ip}")  # fmt: skip
        return out

    return run


@pytest.fixture
def hosts(add):
    add(WEB01, "web01")
    add(WEB02, "web02")
    return {ip: Host.objects.get(ip=ip) for ip in (WEB01, WEB02)}


def job(manage, *args) -> dict:
    out = manage(*args)
    assert out.returncode == 0, out.stderr
    data, _ = wait_job(manage, ID_LINE.search(out.stdout).group(1), timeout=90)
    return data


def test_a_host_added_while_the_gateway_runs_gets_its_command_run(manage, add):
    out = add(WEB01, "web01")
    assert "added salt 127.0.1.90 (minion web01); the salt gateway serves it" in out.stdout
    data = job(manage, "run", "echo hello from $(hostname); echo to-stderr >&2", "--hosts", WEB01)
    task = data["tasks"][0]
    assert task["state"] == "ok", task
    assert task["exit_code"] == 0 and task["agent"] == GOOD
    assert task["stdout"]["head"].startswith("hello from ")
    assert task["stderr"]["head"] == "to-stderr\n"


#: Prints the pid of every process above the command, to its first one: which minion ran it.
ANCESTORS = ("p=$$; while [ \"$p\" -gt 1 ]; do echo $p; "
             "p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2); done")  # fmt: skip


def _minion_of(stack, stdout: str) -> set[str]:
    ancestors = {int(line) for line in stdout.split()}
    found = set()
    for mid in ("web01", "web02"):
        main = psutil.Process(stack.procs[f"minion-{mid}"].pid)
        if ancestors & {main.pid, *(c.pid for c in main.children(recursive=True))}:
            found.add(mid)
    return found


def test_each_task_runs_on_the_minion_recorded_for_its_host_when_it_runs(manage, hosts, add,
                                                                         stack):  # fmt: skip
    data = job(manage, "run", ANCESTORS, "--hosts", WEB01, WEB02)
    ran = {t["host"]: _minion_of(stack, t["stdout"]["head"]) for t in data["tasks"]}
    assert ran == {WEB01: {"web01"}, WEB02: {"web02"}}, data["tasks"]
    # The operator records another minion for a host: the running gateway uses that one.
    add(WEB02, "web01")
    [task] = job(manage, "run", ANCESTORS, "--hosts", WEB02)["tasks"]
    assert _minion_of(stack, task["stdout"]["head"]) == {"web01"}, task


def test_a_failing_command_and_bounded_output(manage, hosts):
    data = job(manage, "run", "seq 1 200000; exit 7", "--hosts", WEB01)
    task = data["tasks"][0]
    assert task["state"] == "failed" and task["exit_code"] == 7, task
    assert task["stdout"]["truncated"] is True, {k: v for k, v in task["stdout"].items()}
    assert task["stdout"]["head"].startswith("1\n2\n3\n")
    assert task["stdout"]["tail"].endswith("199999\n200000\n")
    assert task["stdout"]["bytes"] == len("".join(f"{i}\n" for i in range(1, 200001)))
    assert len(task["stdout"]["head"]) == 65536 and len(task["stdout"]["tail"]) == 65536


def test_bytes_that_are_not_utf8_and_a_timeout(manage, hosts):
    data = job(manage, "run", "printf 'caf\\351\\n'", "--hosts", WEB01)
    assert data["tasks"][0]["stdout"]["head"] == "caf\ufffd\n", data["tasks"][0]
    assert data["tasks"][0]["stdout"]["bytes"] == 5


def test_a_timeout_kills_a_grandchild_on_the_host(manage, hosts, tmp_path):
    mark = tmp_path / "survived"
    data = job(manage, "run", f"sh -c 'sleep 4; touch {mark}' & sleep 30", "--hosts", WEB01,
               "--timeout", "2")  # fmt: skip
    task = data["tasks"][0]
    assert task["state"] == "timeout", task
    assert "timed out after 2 s: its process group was killed on the host" in task["error"]
    time.sleep(3)
    assert not mark.exists()


def test_cancel_kills_the_command_on_the_host(manage, hosts, tmp_path):
    mark = tmp_path / "survived"
    out = manage("run", f"sleep 20; touch {mark}", "--hosts", WEB01)
    job_id = ID_LINE.search(out.stdout).group(1)
    wait_for(lambda: HostTask.objects.filter(job_id=job_id, state="running").exists(), 30,
             "the command to start")  # fmt: skip
    assert manage("cancel", job_id).returncode == 0
    data, _ = wait_job(manage, job_id, timeout=60)
    task = data["tasks"][0]
    assert task["state"] == "cancelled", task
    assert task["error"] == "cancelled while it ran: its process group was killed on the host"
    assert task["duration"] < 18, task
    time.sleep(20.5 - task["duration"])
    assert not mark.exists()


def test_a_collection_is_stored_as_facts(manage, hosts):
    data = job(manage, "collect", "--hosts", WEB01)
    task = data["tasks"][0]
    assert task["state"] == "ok", task
    assert task["stdout"]["head"].startswith("collected cpu, disks, hardware, memory")
    host = hosts[WEB01]
    assert "(salt minion web01)" in task["stdout"]["head"]
    kinds = set(Asset.objects.filter(host=host).values_list("kind", flat=True))
    assert {"system", "cpu", "memory", "mount", "nic", "disk", "hardware"} <= kinds
    facts = HostFacts.objects.get(host=host)
    assert facts.os == "debian" or facts.os  # this machine's os-release id, through Salt
    assert facts.cpu_threads == os.cpu_count()


def test_a_minion_the_master_does_not_know_is_unreachable_with_the_reason(manage, add):
    add(NO_SUCH, "nosuch")
    data = job(manage, "run", "true", "--hosts", NO_SUCH)
    task = data["tasks"][0]
    assert task["state"] == "unreachable", task
    assert task["error"] == ("unreachable: the salt master knows no minion 'nosuch' (not "
                             "accepted, or down)")  # fmt: skip
    assert task["exit_code"] is None, task


def test_a_host_moved_to_agent_mode_is_let_go(manage, add, gateway, salt_env):
    add(MOVED, "web01")
    out = manage("hosts", "mode", MOVED, "--mode", "agent", env=salt_env)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: not _served(_log(gateway), MOVED), 30, f"the gateway to let {MOVED} go")
    make_host(MOVED, with_agent=False)  # its agent's key accepted; no agent runs here
    out = manage("run", "true", "--hosts", MOVED, "--reach-timeout", "3")
    assert out.returncode == 0, out.stderr
    data, _ = wait_job(manage, ID_LINE.search(out.stdout).group(1), timeout=60)
    # Never taken from its queue by the gateway: provably undelivered, not run through salt.
    [task] = data["tasks"]
    assert task["state"] == "unreachable", task
    assert f"is the agent for {MOVED} running?" in task["error"]


def test_a_minion_that_is_down_is_unreachable_with_the_reason(manage, hosts, stack):
    stack.stop_minion("web02")
    data = job(manage, "run", "true", "--hosts", WEB02)
    task = data["tasks"][0]
    assert task["state"] == "unreachable", task
    assert "salt minion 'web02' did not answer" in task["error"]


def test_a_minion_id_with_glob_characters_targets_no_minion_but_itself(stack):
    # What the gateway sends matches the id as it is: "web0*" is no minion's id.
    assert stack.api(local("web0*", "test.ping", [], 3))["return"][0] == {}
    assert stack.api(local("web01", "test.ping", [], 3))["return"][0] == {"web01": True}
    # The same id as a glob (salt's default) would have reached both minions.
    both = stack.api({"client": "local", "tgt": "web0*", "fun": "test.ping", "timeout": 3})
    assert set(both["return"][0]) == {"web01", "web02"}


def test_push_is_refused_in_salt_mode(manage, hosts, tmp_path):
    src = tmp_path / "app.conf"
    src.write_text("x=1\n")
    out = manage("push", str(src), "/tmp/app.conf", "--hosts", WEB01)
    # At dispatch, nothing recorded (the gateway would refuse each task too).
    assert out.returncode != 0
    assert f"push is not supported in salt mode: {WEB01} (minion web01)" in out.stderr


@pytest.fixture
def bad_gateway(gateway, salt_env, tmp_path):
    """In the good one's place (each serves every salt-mode host): a gateway whose salt-api
    password is wrong."""
    wrong = tmp_path / "secret"
    fd = os.open(wrong, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not-the-secret\n")
    os.close(fd)
    gateway.stop("salt-gateway")
    gateway.spawn("salt-gateway-bad", [sys.executable, "-m", "gateway", "--salt", "--node", BAD],
                  {**salt_env, "CMDB_SALT_API_PASSWORD_FILE": str(wrong)})  # fmt: skip
    wait_for(lambda: "ready." in _log(gateway, "salt-gateway-bad"), 60, "the bad one to start")
    yield "salt-gateway-bad"
    gateway.stop("salt-gateway-bad")
    gateway.start_salt_gateway(GOOD, salt_env)


def test_wrong_eauth_is_a_clear_error(manage, add, bad_gateway):
    add(BAD_AUTH, "web01", log=bad_gateway)
    data = job(manage, "run", "true", "--hosts", BAD_AUTH)
    task = data["tasks"][0]
    assert task["state"] == "error" and task["agent"] == BAD, task
    assert "salt-api refused the credentials of user 'ops' (eauth sharedsecret)" in task["error"]
    assert "not-the-secret" not in str(data)
