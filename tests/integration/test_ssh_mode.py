"""The SSH mode through everything real: Debian's sshd on loopback addresses, the gateway
process, Redis, the central worker and an agent; driven by manage.py as a user does."""

import grp
import io
import json
import os
import pwd
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from django_celery_results.models import TaskResult

from cmdb.celery import app
from cmdb.files.uploads import pack_tree
from cmdb.hosts.models import Host
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.dispatch import CommandRequest, dispatch_command
from cmdb.jobs.models import HostTask
from deploy import sshd as sshd_support
from tests.support.cli import ID_LINE, dispatch, wait_job, wait_state
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS, free_port, ping_nodes, wait_for
from wire import blobs

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sshd_support.have_sshd(), reason="needs openssh-server"),
]

SSH_IPS = ["127.0.3.1", "127.0.3.2"]
#: An address nothing listens on (sshd is bound to SSH_IPS only): connection refused.
CLOSED_IP = "127.0.3.9"
GATEWAY_NODE = "gateway@ssh-tests"


@pytest.fixture(scope="module")
def sshd():
    # Not under pytest's base folder (root's, 0700): sshd reads authorized_keys as the login
    # user, and one test logs in as a user of its own.
    folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="cmdb-sshd-"))
    try:
        with sshd_support.sshd(folder, SSH_IPS, free_port()) as server:
            yield server
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def ssh_env(sshd, tmp_path_factory):
    keys = tmp_path_factory.mktemp("gateway-keys")
    return {"CMDB_SSH_KEY": str(sshd.client_key), "CMDB_GATEWAY_KEY": str(keys / "gateway_key"),
            "CMDB_SSH_CONNECT_TIMEOUT": "3"}  # fmt: skip


@pytest.fixture(scope="module")
def gateway(fleet, ssh_env):
    fleet.start_gateway(GATEWAY_NODE, ssh_env)
    wait_for(lambda: ping_nodes(app, [GATEWAY_NODE]), 60, "the gateway to answer pings", 0.5)
    yield fleet
    fleet.stop("gateway")


def _log(fleet) -> str:
    return (fleet.logs / "gateway.log").read_text(errors="replace")


@pytest.fixture
def ssh(manage, gateway, sshd, ssh_env):
    """Run manage.py with the gateway's keys; add and trust ssh-mode hosts."""

    def run(*args):
        return manage(*args, env=ssh_env)

    def add(*ips, user="root", port=None, trust=True):
        out = run("hosts", "add", *ips, "--mode", "ssh", "--ssh-user", user,
                  "--ssh-port", str(port or sshd.port))  # fmt: skip
        assert out.returncode == 0, out.stderr
        if trust:
            out = run("hosts", "trust", *ips)
            assert out.returncode == 0, out.stderr + out.stdout
        # The gateway consumes a new ssh-mode host's queue within seconds.
        wait_for(lambda: all(f"now serving {ip} over SSH" in _log(gateway) for ip in ips), 30,
                 f"the gateway to serve {ips}")  # fmt: skip
        return out

    run.add, run.fleet = add, gateway
    return run


def _one(doc) -> dict:
    [task] = doc["tasks"]
    return task


def test_ssh_key_public_prints_the_authorized_keys_line(ssh, sshd):
    out = ssh("ssh_key", "--public")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sshd.client_key.with_suffix(".pub").read_text().strip()


def test_trust_records_the_key_and_refuses_a_changed_one(ssh, sshd):
    out = ssh.add(SSH_IPS[0])
    assert re.search(r"127\.0\.3\.1: trusted SHA256:\S+", out.stdout), out.stdout
    host = Host.objects.get(ip=SSH_IPS[0])
    assert host.mode == "ssh" and host.ssh_host_key == sshd.host_key_line
    assert host.key_state == "accepted"
    Host.objects.filter(pk=host.pk).update(ssh_host_key=sshd.other_host_key_line)
    out = ssh("hosts", "trust", SSH_IPS[0])
    assert out.returncode == 2
    assert "HOST KEY CHANGED" in out.stderr
    assert Host.objects.get(pk=host.pk).ssh_host_key == sshd.other_host_key_line  # unchanged


def test_run_over_ssh_with_exit_code_and_streams(ssh, manage):
    ssh.add(SSH_IPS[0])
    job = dispatch(manage, "echo out-$(id -un); echo err >&2; exit 3", SSH_IPS[0])
    doc, code = wait_job(manage, job)
    task = _one(doc)
    assert code == 1 and task["state"] == State.FAILED and task["exit_code"] == 3, task
    assert task["stdout"]["head"] == "out-root\n"
    assert task["stderr"]["head"] == "err\n"
    assert task["agent"] == GATEWAY_NODE


def test_three_megabytes_are_bounded_head_and_tail(ssh, manage):
    ssh.add(SSH_IPS[0])
    job = dispatch(manage, "head -c 3000000 /dev/zero | tr '\\0' a; printf END", SSH_IPS[0])
    task = _one(wait_job(manage, job)[0])
    assert task["state"] == State.OK, task
    out = task["stdout"]
    assert out["bytes"] == 3_000_003 and out["truncated"] is True
    assert out["head"] == "a" * 65536
    assert len(out["tail"]) == 65536 and out["tail"].endswith("aEND")


def test_bytes_that_are_not_utf8(ssh, manage):
    ssh.add(SSH_IPS[0])
    job = dispatch(manage, "printf 'caf\\351 \\377ok'", SSH_IPS[0])
    task = _one(wait_job(manage, job)[0])
    assert task["state"] == State.OK, task
    assert task["stdout"]["head"] == "caf\ufffd \ufffdok"
    assert task["stdout"]["bytes"] == 8


def _grandchild(folder, name) -> str:
    # A grandchild in the background that outlives its parent shell, its pid on disk.
    return f"sh -c 'sleep 300 & echo $! > {folder}/{name}; wait'"


def test_timeout_kills_a_grandchild_on_the_host(ssh, manage, tmp_path):
    ssh.add(SSH_IPS[0])
    job = dispatch(manage, _grandchild(tmp_path, "gc.pid"), SSH_IPS[0], extra=["--timeout", "2"])
    task = _one(wait_job(manage, job)[0])
    assert task["state"] == State.TIMEOUT, task
    assert re.search(r"timed out after 2 s; killed the process group \d+ on the host",
                     task["error"]), task["error"]  # fmt: skip
    pid = int((tmp_path / "gc.pid").read_text())
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
             5, f"grandchild {pid} to be gone")  # fmt: skip


def test_cancel_kills_the_process_group(ssh, manage, tmp_path):
    ssh.add(SSH_IPS[0])
    job = dispatch(manage, _grandchild(tmp_path, "c.pid"), SSH_IPS[0])
    task_id = HostTask.objects.get(job_id=job).task_id
    wait_state(task_id, {State.RUNNING}, 20)
    wait_for(lambda: (tmp_path / "c.pid").exists() and (tmp_path / "c.pid").read_text(), 10,
             "the grandchild's pid")  # fmt: skip
    pid = int((tmp_path / "c.pid").read_text())
    out = manage("cancel", job)
    assert out.returncode == 0, out.stderr
    task = wait_state(task_id, {State.CANCELLED}, 20)
    assert "killed the process group" in task.error, task.error
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
             5, f"grandchild {pid} to be gone")  # fmt: skip


def _sshd_of(pid: int) -> psutil.Process:
    """The sshd process serving the connection ``pid`` runs under (its nearest sshd ancestor)."""
    for parent in psutil.Process(pid).parents():
        if parent.name().startswith("sshd"):
            return parent
    raise AssertionError(f"no sshd above {pid}")


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_a_lost_connection_kills_the_group_on_the_host(ssh, manage, tmp_path):
    # No pty, so no SIGHUP: the wrapper on the host sees its channel's stdin end, and kills.
    ssh.add(SSH_IPS[0])
    job = dispatch(manage, "echo started; " + _grandchild(tmp_path, "lost.pid"), SSH_IPS[0])
    wait_for(lambda: (tmp_path / "lost.pid").exists() and (tmp_path / "lost.pid").read_text(),
             20, "the grandchild's pid")  # fmt: skip
    pid = int((tmp_path / "lost.pid").read_text())
    connection = _sshd_of(pid)
    assert "@" in " ".join(connection.cmdline()), connection.cmdline()  # "sshd: root@notty"
    connection.kill()  # the connection drops (as when the gateway or the network dies)
    wait_for(lambda: _gone(pid), 10, f"grandchild {pid} to be killed on the host")
    task = _one(wait_job(manage, job)[0])
    assert task["state"] != State.OK, task


def test_a_changed_host_key_is_refused_unreachable(ssh, manage, sshd):
    ssh.add(SSH_IPS[1])
    Host.objects.filter(ip=SSH_IPS[1]).update(ssh_host_key=sshd.other_host_key_line)
    task = _one(wait_job(manage, dispatch(manage, "touch /tmp/never", SSH_IPS[1]))[0])
    assert task["state"] == State.UNREACHABLE, task
    assert "host key changed" in task["error"], task["error"]


def test_authentication_failure_is_unreachable(ssh, manage):
    ssh.add(SSH_IPS[1], user="nobody-here")
    task = _one(wait_job(manage, dispatch(manage, "true", SSH_IPS[1]))[0])
    assert task["state"] == State.UNREACHABLE, task
    assert "authentication failed for user 'nobody-here'" in task["error"], task["error"]


def test_a_closed_port_is_unreachable(ssh, manage, sshd):
    out = ssh("hosts", "add", CLOSED_IP, "--mode", "ssh", "--ssh-user", "root",
              "--ssh-port", str(sshd.port))  # fmt: skip
    assert out.returncode == 0, out.stderr
    out = ssh("hosts", "trust", CLOSED_IP)
    assert out.returncode == 2 and "connection refused" in out.stderr, out.stderr
    # Recorded anyway (as if the host had gone down since): the gateway says why it cannot.
    Host.objects.filter(ip=CLOSED_IP).update(ssh_host_key=sshd.host_key_line)
    wait_for(lambda: f"now serving {CLOSED_IP} over SSH" in _log(ssh.fleet), 30,
             "the gateway to serve the closed host")  # fmt: skip
    task = _one(wait_job(manage, dispatch(manage, "true", CLOSED_IP))[0])
    assert task["state"] == State.UNREACHABLE, task
    assert f"connection refused ({CLOSED_IP}:{sshd.port})" in task["error"], task["error"]


def test_one_job_mixing_an_agent_host_and_an_ssh_host(ssh, manage):
    make_host(AGENT_IPS[0])
    ssh.add(SSH_IPS[0])
    out = manage("run", "echo from-$(hostname)", "--hosts", SSH_IPS[0], AGENT_IPS[0])
    assert out.returncode == 0, out.stderr
    job = ID_LINE.search(out.stdout).group(1)
    doc, code = wait_job(manage, job)
    assert code == 0, doc
    by_host = {t["host"]: t for t in doc["tasks"]}
    assert {t["state"] for t in by_host.values()} == {State.OK}
    assert by_host[SSH_IPS[0]]["agent"] == GATEWAY_NODE
    assert by_host[AGENT_IPS[0]]["agent"] == f"agent@{AGENT_IPS[0]}"
    text = manage("check_task", job, "--no-group")
    assert text.returncode == 0 and f"from host {SSH_IPS[0]}" in text.stdout, text.stdout
    # Kept for the record (the closing note of the SSH mode shows it).
    record = Path(__file__).resolve().parents[2] / "test-output" / "mixed-mode-job.txt"
    record.parent.mkdir(exist_ok=True)
    record.write_text(out.stdout + text.stdout)


def test_connections_are_reused_within_a_job(ssh, manage, sshd):
    ssh.add(SSH_IPS[0])
    before = sshd.log().count("Accepted publickey")
    for _ in range(3):
        wait_job(manage, dispatch(manage, "true", SSH_IPS[0]))
    time.sleep(0.2)
    assert sshd.log().count("Accepted publickey") - before <= 1


def _collect(manage, ip) -> dict:
    out = manage("collect", "--hosts", ip)
    assert out.returncode == 0, out.stderr
    doc, code = wait_job(manage, ID_LINE.search(out.stdout).group(1))
    assert code == 0, doc
    return _one(doc)


def test_a_collection_over_ssh_is_stored_and_diffed_as_an_agents(ssh, manage):
    from cmdb.assets.models import Asset, Change, HostFacts

    agent_host = make_host(AGENT_IPS[0])
    ssh.add(SSH_IPS[0])
    task = _collect(manage, SSH_IPS[0])
    assert task["stdout"]["head"].startswith("collected cpu, disks"), task
    host = Host.objects.get(ip=SSH_IPS[0])
    kinds = set(Asset.objects.filter(host=host).values_list("kind", flat=True))
    assert {"system", "cpu", "memory", "mount", "nic"} <= kinds
    assert [c.action for c in Change.objects.filter(host=host)] == ["discovered"]
    _collect(manage, SSH_IPS[0])  # the same host again: no history
    assert Change.objects.filter(host=host).count() == 1
    # The same machine through its agent: the same facts.
    _collect(manage, AGENT_IPS[0])
    by_ssh, by_agent = HostFacts.objects.get(host=host), HostFacts.objects.get(host=agent_host)
    for field in ("os", "os_version", "kernel", "arch", "cpu_model", "cpu_threads"):
        assert getattr(by_ssh, field) == getattr(by_agent, field), field
    assert "discovered" in manage("changes", SSH_IPS[0], "--since", "1h").stdout


def _push(manage, src, dest, ip, *extra) -> dict:
    out = manage("push", str(src), str(dest), "--hosts", ip, *extra)
    assert out.returncode == 0, out.stderr
    return _one(wait_job(manage, ID_LINE.search(out.stdout).group(1))[0])


def test_push_over_sftp_is_verified_then_skipped(ssh, manage, tmp_path):
    ssh.add(SSH_IPS[0])
    src, dest = tmp_path / "app.conf", tmp_path / "etc" / "app.conf"
    dest.parent.mkdir()
    dest.write_text("old\n")
    src.write_bytes(b"key = value\n\xff binary too\n" * 1000)
    task = _push(manage, src, dest, SSH_IPS[0])
    assert task["state"] == State.OK, task
    assert task["stdout"]["head"].startswith("verified: sha256 verified on the host"), task
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["app.conf"]  # no temp file left
    task = _push(manage, src, dest, SSH_IPS[0])
    assert task["state"] == State.OK and task["stdout"]["head"].startswith("skipped"), task


def test_fetch_over_sftp_is_verified_and_stored_as_an_agents(ssh, manage, tmp_path):
    import hashlib

    ssh.add(SSH_IPS[0])
    src = tmp_path / "app.log"
    src.write_bytes(b"log over ssh \xff\n" * 1000)
    to = tmp_path / "fetched"
    out = manage("fetch", str(src), "--hosts", SSH_IPS[0], "--to", str(to))
    assert out.returncode == 0, out.stderr
    doc, code = wait_job(manage, ID_LINE.search(out.stdout).group(1))
    task = _one(doc)
    assert code == 0 and task["state"] == State.OK, task
    assert task["stdout"]["head"].startswith("fetched 15000 bytes, sha256 "), task
    assert (to / SSH_IPS[0] / "app.log").read_bytes() == src.read_bytes()
    fetched = HostTask.objects.get(job_id=doc["id"]).fetched
    assert fetched["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert fetched["size"] == 15000
    # A missing file or a folder: an error that says which, as the agent's.
    out = manage("fetch", str(tmp_path), "--hosts", SSH_IPS[0])
    task = _one(wait_job(manage, ID_LINE.search(out.stdout).group(1))[0])
    assert task["state"] == State.ERROR and "not a regular file" in task["error"], task


def _tree(folder, files: dict) -> None:
    for rel, body in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def _listing(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_push_over_ssh_is_verified_skipped_then_replaced(ssh, manage, tmp_path):
    ssh.add(SSH_IPS[0])
    src, dest = tmp_path / "release", tmp_path / "srv" / "site"
    _tree(src, {"index.html": b"<h1>v1</h1>\n", "bin/run": b"#!/bin/sh\necho run\n",
                "conf/app.conf": b"key = \xff\n"})  # fmt: skip
    (src / "bin" / "run").chmod(0o4755)  # set-user-ID: dropped, as tarfile's data filter does
    (src / "current").symlink_to("index.html")
    dest.parent.mkdir()
    _tree(dest, {"old.txt": b"from before\n"})
    task = _push(manage, src, dest, SSH_IPS[0])
    assert task["state"] == State.OK, task
    assert task["stdout"]["head"].startswith("verified: sha256 verified on the host"), task
    assert _listing(dest) == _listing(src)  # the old folder replaced whole: old.txt is gone
    assert (dest / "bin" / "run").stat().st_mode & 0o7777 == 0o755
    assert (dest / "conf" / "app.conf").stat().st_mode & 0o777 == 0o644
    assert (dest / "current").is_symlink() and (dest / "current").read_text() == "<h1>v1</h1>\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["site"]  # no temp, no old copy
    # The agent's payload: check_task, the API and the admin show the same thing.
    moved = json.loads(TaskResult.objects.get(task_id=task["task_id"]).result)["transfer"]
    assert moved["outcome"] == "verified" and moved["bytes"] > 0 and len(moved["sha256"]) == 64

    task = _push(manage, src, dest, SSH_IPS[0])
    assert task["state"] == State.OK and task["stdout"]["head"].startswith("skipped"), task
    assert sorted(p.name for p in dest.parent.iterdir()) == ["site"]

    (src / "conf" / "app.conf").write_bytes(b"key = v2\n")
    inode = dest.stat().st_ino
    task = _push(manage, src, dest, SSH_IPS[0])
    assert task["state"] == State.OK and task["stdout"]["head"].startswith("verified"), task
    assert (dest / "conf" / "app.conf").read_bytes() == b"key = v2\n"
    assert dest.stat().st_ino != inode  # a new folder renamed in, not files written into it
    assert sorted(p.name for p in dest.parent.iterdir()) == ["site"]


def test_an_unsafe_archive_is_refused_on_the_gateway_before_anything_is_sent(ssh, tmp_path):
    ssh.add(SSH_IPS[0])
    dest = tmp_path / "site"
    for name, linkname in (("../escaped.txt", None), ("out", "../../etc")):
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(name)
            if linkname:
                info.type, info.linkname = tarfile.SYMTYPE, linkname
                tar.addfile(info)
            else:
                info.size = 5
                tar.addfile(info, io.BytesIO(b"evil\n"))
        archive.seek(0)
        with redis_client(app) as client:
            manifest = blobs.put_blob(client, archive)
        agent = {"dest": str(dest), "tree": True, "files": {}, "manifest": manifest,
                 "mode": None, "owner": None}  # fmt: skip
        job = dispatch_command(CommandRequest(kind=JobKindChoices.PUSH, targets=[SSH_IPS[0]],
                                              params={"agent": agent}), app)  # fmt: skip
        task = wait_state(HostTask.objects.get(job=job).task_id, {State.ERROR, State.OK}, 60)
        assert task.state == State.ERROR, task.error
        assert task.error.startswith(f"unsafe archive member {name!r}: "), task.error
    assert list(tmp_path.iterdir()) == []  # nothing written, no private folder made


def test_an_equal_folder_is_skipped_without_its_blob(ssh, manage, tmp_path):
    """The host is looked at first: a rerun on a fleet that has it all moves no bytes through
    the broker to the gateway (here the blob is gone, and the push still ends skipped)."""
    ssh.add(SSH_IPS[0])
    src, dest = tmp_path / "release", tmp_path / "site"
    _tree(src, {"a.txt": b"a\n", "sub/b.txt": b"b\n"})
    assert _push(manage, src, dest, SSH_IPS[0])["state"] == State.OK
    archive, files = pack_tree(str(src))
    with archive, redis_client(app) as client:
        manifest = blobs.put_blob(client, archive)
        blobs.delete_blob(client, manifest)
    agent = {"dest": str(dest), "tree": True, "files": files, "manifest": manifest,
             "mode": None, "owner": None}  # fmt: skip
    job = dispatch_command(CommandRequest(kind=JobKindChoices.PUSH, targets=[SSH_IPS[0]],
                                          params={"agent": agent}), app)  # fmt: skip
    task = wait_state(HostTask.objects.get(job=job).task_id, {State.ERROR, State.OK}, 60)
    assert task.state == State.OK and task.stdout_head.startswith("skipped"), task.error
    (dest / "a.txt").write_bytes(b"changed on the host\n")  # not equal: now it needs the blob
    job = dispatch_command(CommandRequest(kind=JobKindChoices.PUSH, targets=[SSH_IPS[0]],
                                          params={"agent": agent}), app)  # fmt: skip
    task = wait_state(HostTask.objects.get(job=job).task_id, {State.ERROR, State.OK}, 60)
    assert task.state == State.ERROR and "missing" in task.error, task.error
    assert (dest / "a.txt").read_bytes() == b"changed on the host\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release", "site"]


def test_unsafe_targets_are_refused_with_their_reason(ssh, manage, tmp_path):
    ssh.add(SSH_IPS[0])
    other = pwd.getpwnam(sshd_support.bench_user())
    src = tmp_path / "app.conf"
    src.write_text("new\n")
    real = tmp_path / "real"
    real.mkdir()
    (real / "app.conf").write_text("old\n")
    # A link another user owns, as one may plant it: never followed.
    (tmp_path / "planted").symlink_to(real)
    os.lchown(tmp_path / "planted", other.pw_uid, other.pw_gid)
    # A folder every user can change (no sticky bit): refused, as the agent refuses it.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    # The target itself a link (to a file of root's elsewhere).
    (real / "link.conf").symlink_to(real / "app.conf")
    cases = {
        tmp_path / "planted" / "app.conf": (
            f"refused: {tmp_path}/planted is a symbolic link owned by user {other.pw_name}"),
        shared / "app.conf": f"refused: the folder {shared} can be changed by every user",
        real / "link.conf": f"refused: {real}/link.conf is a symbolic link",
        tmp_path / "missing" / "app.conf": f"{tmp_path}/missing is missing",
    }  # fmt: skip
    for dest, reason in cases.items():
        task = _push(manage, src, dest, SSH_IPS[0])
        assert task["state"] == State.ERROR and task["error"].startswith(reason), (dest, task)
    assert (real / "app.conf").read_text() == "old\n"
    assert sorted(p.name for p in real.iterdir()) == ["app.conf", "link.conf"]
    assert list(shared.iterdir()) == []
    # A root-owned link in folders only root can change is followed, as the agent follows
    # /lib -> usr/lib.
    (tmp_path / "trusted").symlink_to(real)
    task = _push(manage, src, tmp_path / "trusted" / "app.conf", SSH_IPS[0])
    assert task["state"] == State.OK, task
    assert (real / "app.conf").read_text() == "new\n"


@pytest.fixture
def user_folder():
    """A folder of the non-root login user's, reachable by it (tmp_path is root's, 0700)."""
    user = pwd.getpwnam(sshd_support.bench_user())
    folder = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="cmdb-ssh-"))
    os.chown(folder, user.pw_uid, user.pw_gid)
    yield user, folder
    shutil.rmtree(folder)


def test_owner_over_ssh_as_a_non_root_user(ssh, manage, tmp_path, user_folder):
    user, folder = user_folder
    ssh.add(SSH_IPS[1], user=user.pw_name)
    src = tmp_path / "release"
    _tree(src, {"a.txt": b"a\n", "sub/b.txt": b"b\n"})
    dest = folder / "site"
    task = _push(manage, src, dest, SSH_IPS[1], "--owner", user.pw_name)
    assert task["state"] == State.OK and task["stdout"]["head"].startswith("verified"), task
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [dest, *dest.rglob("*")]} == {
        (user.pw_uid, user.pw_gid)
    }
    # root's: only root could give it that, and the push says so, the old folder kept.
    (src / "a.txt").write_bytes(b"a2\n")
    for dest_, kind in ((dest, "folder"), (folder / "one.conf", "file")):
        what = src if kind == "folder" else src / "a.txt"
        task = _push(manage, what, dest_, SSH_IPS[1], "--owner", "root")
        assert task["state"] == State.ERROR, task
        assert task["error"].startswith(
            f"owner 'root' not set: the ssh user (uid {user.pw_uid}) is not root, and chown "
        ), task["error"]
        assert task["error"].endswith("nothing was changed on the host"), task["error"]
    assert (dest / "a.txt").read_bytes() == b"a\n"
    assert sorted(p.name for p in folder.iterdir()) == ["site"]  # no temp left, no one.conf


def test_owner_over_ssh_as_root_gives_the_copy_away(ssh, manage, tmp_path):
    ssh.add(SSH_IPS[0])
    user = pwd.getpwnam(sshd_support.bench_user())
    src, dest = tmp_path / "release", tmp_path / "site"
    _tree(src, {"a.txt": b"a\n", "sub/b.txt": b"b\n"})
    owner = f"{user.pw_name}:{grp.getgrgid(user.pw_gid).gr_name}"
    task = _push(manage, src, dest, SSH_IPS[0], "--owner", owner, "--mode", "0750")
    assert task["state"] == State.OK, task
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [dest, *dest.rglob("*")]} == {
        (user.pw_uid, user.pw_gid)
    }
    assert dest.stat().st_mode & 0o7777 == 0o750
    task = _push(manage, src, dest, SSH_IPS[0], "--owner", owner, "--mode", "0750")
    assert task["state"] == State.OK and task["stdout"]["head"].startswith("skipped"), task


def test_batches_stop_over_ssh_once_too_many_hosts_failed(ssh, manage, tmp_path):
    ssh.add(*SSH_IPS)
    src = tmp_path / "release"
    _tree(src, {"a.txt": b"a\n"})
    dest = tmp_path / "missing" / "site"  # over SSH no folder is made on the way: it fails
    out = manage("push", str(src), str(dest), "--hosts", *SSH_IPS, "--batch", "1",
                 "--max-failures", "0")  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc, code = wait_job(manage, ID_LINE.search(out.stdout).group(1))
    states = sorted((t["state"], t["error"]) for t in doc["tasks"])
    assert code == 1 and [s for s, _ in states] == [State.CANCELLED, State.ERROR], states
    assert "1 host(s) failed, more than the 0 allowed" in states[0][1]
    assert states[1][1].startswith(f"{tmp_path}/missing is missing"), states
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]
