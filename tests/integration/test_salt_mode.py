"""Salt mode through a real salt-master, salt-minions and salt-api on loopback
(tests/support/salt.py) and the salt gateway worker (workers.salt_gateway): the same jobs,
states, results and stored facts as through an agent."""

import os
import sys
import time
from pathlib import Path

import pytest

from cmdb.assets.models import Asset, HostFacts
from cmdb.hosts.choices import ModeChoices
from cmdb.hosts.models import Host
from cmdb.jobs.models import HostTask
from tests.support import salt
from tests.support.cli import ID_LINE, wait_job
from tests.support.factories import make_host
from tests.support.fleet import AGENT_KEYS, wait_for
from workers.saltapi import local

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

#: In the suite's auto-accepted range (tests.support.fleet.AUTO_ACCEPTED).
WEB01, WEB02, BAD_AUTH = "127.0.1.90", "127.0.1.91", "127.0.1.92"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("salt")
    try:
        stack = salt.SaltStack(root, minion_ids=("web01", "web02")).up()
    except salt.SaltUnavailable as exc:
        pytest.fail(f"salt could not run here: {exc}")
    yield stack
    stack.stop_all()


def _start_gateway(fleet, name: str, minions: str, password_file: Path, stack) -> Path:
    state = fleet.run_dir / "agent-state" / name
    fleet.spawn(name, [sys.executable, "-m", "workers.salt_gateway", "--concurrency", "2"], {
        "CMDB_AGENT_STATE_DIR": str(state),
        "CMDB_SALT_API_URL": stack.api_url,
        "CMDB_SALT_API_USER": salt.EAUTH_USER,
        "CMDB_SALT_API_EAUTH": "sharedsecret",
        "CMDB_SALT_API_PASSWORD_FILE": str(password_file),
        "CMDB_SALT_MINIONS": minions,
        "CMDB_SALT_REPLY_TIMEOUT": "3",
    })  # fmt: skip
    pub = wait_for(lambda: (state / "agent_key.pub").exists() and state / "agent_key.pub", 60,
                   f"{name} to make its key")  # fmt: skip
    return pub


@pytest.fixture(scope="module")
def gateway(fleet, stack, tmp_path_factory):
    pub = _start_gateway(fleet, "salt-gateway", f"{WEB01}=web01,{WEB02}=web02",
                         stack.password_file(), stack)  # fmt: skip
    wrong = tmp_path_factory.mktemp("wrong") / "secret"
    fd = os.open(wrong, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not-the-secret\n")
    os.close(fd)
    bad_pub = _start_gateway(fleet, "salt-gateway-bad", f"{BAD_AUTH}=web01", wrong, stack)
    AGENT_KEYS.update({WEB01: pub.read_text(), WEB02: pub.read_text(),
                       BAD_AUTH: bad_pub.read_text()})  # fmt: skip
    yield
    fleet.stop("salt-gateway")
    fleet.stop("salt-gateway-bad")


MINIONS = {WEB01: "web01", WEB02: "web02", BAD_AUTH: "web01"}


@pytest.fixture
def hosts(gateway):
    made = {ip: make_host(ip) for ip in MINIONS}
    for ip, minion in MINIONS.items():  # as `hosts add IP --mode salt --minion ID` records them
        Host.objects.filter(ip=ip).update(mode=ModeChoices.SALT, salt_minion=minion)
    return made


def job(manage, *args) -> dict:
    out = manage(*args)
    assert out.returncode == 0, out.stderr
    data, _ = wait_job(manage, ID_LINE.search(out.stdout).group(1), timeout=90)
    return data


def test_a_command_through_salt(manage, hosts):
    data = job(manage, "run", "echo hello from $(hostname); echo to-stderr >&2", "--hosts", WEB01)
    task = data["tasks"][0]
    assert task["state"] == "ok", task
    assert task["exit_code"] == 0
    assert task["stdout"]["head"].startswith("hello from ")
    assert task["stderr"]["head"] == "to-stderr\n"


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
    kinds = set(Asset.objects.filter(host=host).values_list("kind", flat=True))
    assert {"system", "cpu", "memory", "mount", "nic", "disk", "hardware"} <= kinds
    facts = HostFacts.objects.get(host=host)
    assert facts.os == "debian" or facts.os  # this machine's os-release id, through Salt
    assert facts.cpu_threads == os.cpu_count()


def test_a_minion_that_is_down_is_unreachable_with_the_reason(manage, hosts, stack):
    stack.stop_minion("web02")
    data = job(manage, "run", "true", "--hosts", WEB02)
    task = data["tasks"][0]
    assert task["state"] == "unreachable", task
    assert "salt minion 'web02' did not answer" in task["error"]


def test_wrong_eauth_is_a_clear_error(manage, hosts):
    data = job(manage, "run", "true", "--hosts", BAD_AUTH)
    task = data["tasks"][0]
    assert task["state"] == "error", task
    assert "salt-api refused the credentials of user 'ops' (eauth sharedsecret)" in task["error"]
    assert "not-the-secret" not in str(data)


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
