"""Push and fetch through real agents, each with its own root folder on this one machine; and
operating the local fleet (`python -m deploy.local status`, `restart`)."""

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import psutil
import pytest

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from deploy.local import Fleet, read_pidfile
from tests.support.cli import ID_LINE, dispatch, wait_job
from tests.support.factories import make_host
from tests.support.fleet import ROOT, ping_nodes, remember_keys, rooted_agents, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

IPS = ["127.0.1.61", "127.0.1.62", "127.0.1.63"]
#: The agent the restart test starts and restarts (auto-accepted, nobody else's).
OPS_IP = "127.0.1.67"
MB = 1 << 20


@pytest.fixture(scope="module")
def roots(fleet, tmp_path_factory):
    with rooted_agents(fleet, IPS, tmp_path_factory.mktemp("roots")) as roots:
        yield roots


@pytest.fixture
def hosts(roots):
    return [make_host(ip) for ip in IPS]


def sha(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


def run_job(manage, *args, expect=(0,)) -> dict:
    out = manage(*args)
    assert out.returncode == 0, out.stderr
    data, code = wait_job(manage, ID_LINE.search(out.stdout).group(1), timeout=180)
    assert code in expect, json.dumps(data, indent=1)[:3000]
    return data


def outcomes(data) -> dict:
    return {h["host"]: (h["state"], h["stdout"]["head"].split(":")[0]) for h in data["tasks"]}


def test_a_50_mb_file_reaches_three_hosts_verified_then_a_rerun_is_skipped(
    manage, hosts, roots, tmp_path
):
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        for _ in range(50):
            f.write(os.urandom(MB))

    data = run_job(manage, "push", str(source), "/opt/app/big.bin", "--hosts", *IPS,
                   "--mode", "0640")  # fmt: skip

    assert outcomes(data) == {ip: ("ok", "verified") for ip in IPS}
    for root in roots.values():
        target = root / "opt/app/big.bin"
        assert sha(target) == sha(source)
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    again = run_job(manage, "push", str(source), "/opt/app/big.bin", "--hosts", *IPS)
    assert outcomes(again) == {ip: ("ok", "skipped") for ip in IPS}
    # Once the pushes have ended, the central worker deletes the chunks from Redis.
    from cmdb.celery import app
    from cmdb.jobs.broker import redis_client

    with redis_client(app) as client:
        meta = f"cmdb:blob:{sha(source)}:meta"
        wait_for(lambda: not client.exists(meta), 30, "the blob to be released")


def test_a_corrupted_transfer_is_detected_and_the_old_file_kept(manage, hosts, roots, tmp_path):
    from cmdb.celery import app
    from cmdb.jobs.broker import redis_client
    from wire import blobs

    old, new = tmp_path / "v1.conf", tmp_path / "v2.conf"
    old.write_bytes(b"version = 1\n" * 1000)
    new.write_bytes(b"version = 2\n" * 300000)  # several chunks
    run_job(manage, "push", str(old), "/etc/app/app.conf", "--hosts", IPS[0])
    with redis_client(app) as client, open(new, "rb") as f:
        manifest = blobs.put_blob(client, f)
        client.set(f"cmdb:blob:{manifest['sha256']}:1", b"x" * manifest["chunk_size"])

    # The same content is not uploaded again (content-addressed): the agent gets the bad chunk.
    data = run_job(manage, "push", str(new), "/etc/app/app.conf", "--hosts", IPS[0], expect=(1,))

    host = data["tasks"][0]
    assert host["state"] == State.ERROR and "checksum mismatch" in host["error"]
    target = roots[IPS[0]] / "etc/app/app.conf"
    assert target.read_bytes() == old.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["app.conf"]  # no temp left


def test_a_folder_travels_as_one_archive_and_reruns_are_skipped(manage, hosts, roots, tmp_path):
    release = tmp_path / "release"
    (release / "bin").mkdir(parents=True)
    (release / "bin/app").write_text("#!/bin/sh\necho app\n")
    (release / "README").write_text("release 42\n")

    data = run_job(manage, "push", str(release), "/opt/app/releases/42", "--hosts", *IPS[:2])

    assert outcomes(data) == {ip: ("ok", "verified") for ip in IPS[:2]}
    for ip in IPS[:2]:
        assert (roots[ip] / "opt/app/releases/42/bin/app").read_text() == "#!/bin/sh\necho app\n"
    again = run_job(manage, "push", str(release), "/opt/app/releases/42", "--hosts", *IPS[:2])
    assert outcomes(again) == {ip: ("ok", "skipped") for ip in IPS[:2]}


def test_an_archive_with_dotdot_is_refused_and_nothing_is_written(fleet, hosts, roots):
    from cmdb.celery import app
    from cmdb.jobs.broker import redis_client
    from cmdb.jobs.choices import JobKindChoices
    from cmdb.jobs.dispatch import CommandRequest, dispatch_command
    from wire import blobs

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, body in (("ok.txt", b"fine\n"), ("../escaped.txt", b"evil\n")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    archive.seek(0)
    with redis_client(app) as client:
        manifest = blobs.put_blob(client, archive)
    agent = {"dest": "/srv/site", "tree": True, "files": {"ok.txt": "0" * 64},
             "manifest": manifest, "mode": None, "owner": None}  # fmt: skip
    job = dispatch_command(
        CommandRequest(kind=JobKindChoices.PUSH, targets=[IPS[2]], params={"agent": agent}), app
    )

    task = wait_for(
        lambda: HostTask.objects.filter(job=job, state__in=["ok", "error"]).first(), 60, "push"
    )
    assert task.state == State.ERROR and "unsafe archive member" in task.error
    root = roots[IPS[2]]
    assert not (root / "srv").exists() and not (root / "escaped.txt").exists()
    assert not (root.parent / "escaped.txt").exists()


def test_batches_stop_once_too_many_hosts_failed(manage, hosts, roots, tmp_path):
    source = tmp_path / "app.conf"
    source.write_text("x = 1\n")
    blocker = roots[IPS[0]] / "data"
    blocker.write_text("a file where a folder should be\n")  # this host's push will fail
    try:
        data = run_job(manage, "push", str(source), "/data/app.conf", "--hosts", *IPS,
                       "--batch", "1", "--max-failures", "0", expect=(1,))  # fmt: skip
    finally:
        blocker.unlink()

    states = {h["host"]: (h["state"], h["error"]) for h in data["tasks"]}
    assert states[IPS[0]][0] == State.ERROR
    for ip in IPS[1:]:
        assert states[ip][0] == State.CANCELLED
        assert "1 host(s) failed, more than the 0 allowed" in states[ip][1]
        assert not (roots[ip] / "data/app.conf").exists()


def test_batches_go_one_after_another(manage, hosts, roots, tmp_path):
    source = tmp_path / "motd"
    source.write_text("hello\n")

    data = run_job(manage, "push", str(source), "/etc/motd", "--hosts", *IPS, "--batch", "2")

    assert outcomes(data) == {ip: ("ok", "verified") for ip in IPS}
    tasks = {t.ip: t for t in HostTask.objects.filter(job_id=data["id"])}
    # The last batch started only after the first had ended.
    assert tasks[IPS[2]].started_at >= max(tasks[ip].finished_at for ip in IPS[:2])


def test_fetch_copies_each_hosts_file_into_its_own_folder(manage, hosts, roots, tmp_path, settings):
    for ip, root in roots.items():
        (root / "var/log").mkdir(parents=True, exist_ok=True)
        (root / "var/log/app.log").write_text(f"log of {ip}\n")
    to = tmp_path / "logs"

    data = run_job(manage, "fetch", "/var/log/app.log", "--hosts", *IPS, "--to", str(to))

    assert {h["state"] for h in data["tasks"]} == {State.OK}
    for ip in IPS:
        assert (to / ip / "app.log").read_text() == f"log of {ip}\n"
    files = {t.ip: t.fetched for t in HostTask.objects.filter(job_id=data["id"])}
    assert files == {ip: {"path": str(to / ip / "app.log"), "size": len(f"log of {ip}\n"),
                          "sha256": sha(to / ip / "app.log")} for ip in IPS}  # fmt: skip
    # What check_task shows is the API's document: a download link, never a server path.
    assert {h["host"]: h["file"]["sha256"] for h in data["tasks"]} == {
        ip: f["sha256"] for ip, f in files.items()
    }
    assert all(h["file"]["download"].endswith("/file/") for h in data["tasks"])
    # The same content on every host: each copy still arrives.
    for root in roots.values():
        (root / "var/log/same.log").write_text("identical everywhere\n")
    same = run_job(manage, "fetch", "/var/log/same.log", "--hosts", *IPS, "--to", str(to))
    assert {h["state"] for h in same["tasks"]} == {State.OK}
    assert all((to / ip / "same.log").read_text() == "identical everywhere\n" for ip in IPS)
    missing = run_job(manage, "fetch", "/var/log/nope.log", "--hosts", IPS[0], "--to", str(to),
                      expect=(1,))  # fmt: skip
    assert missing["tasks"][0]["state"] == State.ERROR
    # Without --to, into the server's fetch folder, where the API serves it from.
    kept = run_job(manage, "fetch", "/var/log/app.log", "--hosts", IPS[0])
    stored = HostTask.objects.get(job_id=kept["id"]).fetched["path"]
    assert stored == str(settings.CMDB["FETCH_DIR"] / kept["id"] / IPS[0] / "app.log")
    assert Path(stored).read_text() == f"log of {IPS[0]}\n"


def local(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m deploy.local ARGS`, as `make status` and `make restart` run it."""
    return subprocess.run([sys.executable, "-m", "deploy.local", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def gone(pid: int) -> bool:
    # The old agent was this process's child: killed, it is a zombie until reaped.
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_status_and_restart_say_when_nothing_runs(tmp_path, process_env):
    env = {**os.environ, **process_env, "CMDB_RUN_DIR": str(tmp_path / "never-up")}

    status = local("status", env=env)
    restart = local("restart", "central", env=env)

    assert status.returncode == 0 and "nothing is running" in status.stdout, status
    assert restart.returncode != 0 and "nothing is running" in restart.stderr, restart
    pids = tmp_path / "gone" / "pids"
    pids.mkdir(parents=True)
    (pids / "central.pid").write_text("999999999 1.0")  # a pid no process has
    gone = local("status", env={**env, "CMDB_RUN_DIR": str(tmp_path / "gone")})
    assert "central" in gone.stdout and "gone" in gone.stdout
    assert "nothing is running" in gone.stdout


def test_restart_starts_one_agent_again_and_leaves_the_rest_running(
    fleet, manage, process_env, tmp_path
):  # fmt: skip
    from cmdb.celery import app

    ops = Fleet(tmp_path / "ops", process_env)
    try:
        ops.start_agent(OPS_IP, concurrency=1)
        wait_for(lambda: ping_nodes(app, [f"agent@{OPS_IP}"]), 90, "the agent", interval=0.5)
        remember_keys(ops, [OPS_IP])
        make_host(OPS_IP)
        old = read_pidfile(ops.pids / f"agent-{OPS_IP}.pid")
        central = read_pidfile(fleet.pids / "central.pid")

        out = local("restart", "agent", OPS_IP, env=ops.env)

        assert out.returncode == 0, out.stdout + out.stderr
        new = read_pidfile(ops.pids / f"agent-{OPS_IP}.pid")
        assert new is not None and new != old
        assert gone(old), f"the old agent (pid {old}) still runs"
        assert read_pidfile(fleet.pids / "central.pid") == central  # the rest left alone
        status = local("status", env=ops.env)
        assert f"agent-{OPS_IP}" in status.stdout and "running" in status.stdout
        data, code = wait_job(manage, dispatch(manage, "echo back", OPS_IP))
        assert code == 0 and data["tasks"][0]["stdout"]["head"] == "back\n"
    finally:
        ops.stop_all()
