"""Push and fetch through the API, to real agents over the real broker.

Each agent sees its own folder as "/" (CMDB_AGENT_ROOT), so that two hosts on one machine do
not write over each other's files.
"""

import base64
import hashlib
import io
import os
import stat
import tarfile

import pytest

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.api import poll
from tests.support.factories import make_host, tar_upload
from tests.support.fleet import rooted_agents

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

IPS = ["127.0.1.71", "127.0.1.72"]
MB = 1 << 20


@pytest.fixture(scope="module")
def roots(fleet, tmp_path_factory):
    with rooted_agents(fleet, IPS, tmp_path_factory.mktemp("api-roots")) as roots:
        yield roots


@pytest.fixture
def hosts(roots):
    return [make_host(ip) for ip in IPS]


@pytest.fixture
def operator(client_with):
    return client_with("jobs.run_command", "jobs.view_job", "jobs.view_hosttask",
                       "jobs.view_output",
                       username="deployer")  # fmt: skip


def push(client, expect: int = 202, **fields):
    response = client.post("/api/jobs/push/", fields, format="multipart")
    assert response.status_code == expect, response.content
    return response.json()


def fetch(client, expect: int = 202, **body):
    response = client.post("/api/jobs/fetch/", body, "json")
    assert response.status_code == expect, response.content
    return response.json()


def finished(client, answer: dict) -> dict:
    return poll(client, answer["url"], lambda b: b["done"], 120, f"job {answer['id']}")


def outcomes(job: dict) -> dict:
    return {t["host"]: (t["state"], t["stdout"]["head"].split(":")[0]) for t in job["tasks"]}


def file_jobs():
    # Not Job.objects: agents that start collect facts (jobs of their own).
    return Job.objects.filter(kind__in=["push", "fetch"]).exists()


def blob_count() -> int:
    from cmdb.celery import app
    from cmdb.jobs.broker import redis_client

    with redis_client(app) as client:
        return len(client.keys("cmdb:blob:*:meta"))


def test_a_file_pushed_through_the_api_reaches_each_host_verified(operator, hosts, roots):
    # Larger than Django's in-memory upload limit (2.5 MB): spooled to disk, sent in chunks.
    content = os.urandom(5 * MB + 123)
    upload = io.BytesIO(content)
    upload.name = "app.bin"

    answer = push(operator, file=upload, dest="/opt/app/app.bin", mode="0640", hosts=IPS)

    assert answer["kind"] == "push"
    assert [t["host"] for t in answer["tasks"]] == IPS
    job = finished(operator, answer)
    assert outcomes(job) == {ip: ("ok", "verified") for ip in IPS}
    assert job["requested_by"] == "deployer"
    for root in roots.values():
        target = root / "opt/app/app.bin"
        assert target.read_bytes() == content
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    upload.seek(0)
    again = finished(operator, push(operator, file=upload, dest="/opt/app/app.bin", hosts=IPS))
    assert outcomes(again) == {ip: ("ok", "skipped") for ip in IPS}


def test_a_folder_pushed_as_a_tar_is_unpacked_on_each_host(operator, hosts, roots):
    release = {"bin/app": b"#!/bin/sh\necho 7\n", "README": b"release 7\n"}

    upload = tar_upload(release, name="release.tar.gz", executable={"bin/app"})
    answer = push(operator, file=upload, dest="/opt/app/releases/7", archive="true",
                  hosts=IPS, batch=1)  # fmt: skip

    job = finished(operator, answer)
    assert outcomes(job) == {ip: ("ok", "verified") for ip in IPS}
    for root in roots.values():
        folder = root / "opt/app/releases/7"
        assert {p: (folder / p).read_bytes() for p in release} == release
        assert os.access(folder / "bin/app", os.X_OK)
    # batch=1: one host after the other.
    assert sorted(HostTask.objects.filter(job_id=job["id"]).values_list("batch", flat=True)) == [
        0,
        1,
    ]


def test_an_unsafe_archive_is_refused_before_anything_is_sent(operator, hosts, roots):
    evil = tar_upload({"ok.txt": b"fine\n", "../escaped.txt": b"gotcha\n"})
    blobs = blob_count()

    errors = push(operator, 400, file=evil, dest="/srv/site", archive="true", hosts=IPS)

    assert "unsafe archive member '../escaped.txt'" in errors["file"][0]
    assert not file_jobs()
    assert blob_count() == blobs
    for root in roots.values():
        assert not (root / "srv").exists() and not (root.parent / "escaped.txt").exists()
    not_tar = io.BytesIO(b"this is not a tar archive")
    not_tar.name = "x.tar"
    errors = push(operator, 400, file=not_tar, dest="/srv/site", archive="true", hosts=IPS)
    assert errors["file"][0].startswith("not a readable tar archive")


def test_a_bad_push_request_says_why_and_uploads_nothing(operator, hosts):
    def upload():
        f = io.BytesIO(b"x" * 1000)
        f.name = "x.conf"
        return f

    blobs = blob_count()

    assert push(operator, 400, dest="/etc/x.conf", hosts=IPS) == {
        "file": ["No file was submitted."]
    }
    assert push(operator, 400, file=upload(), dest="etc/x.conf", hosts=IPS) == {
        "dest": ["give an absolute path (it starts with /)"]
    }
    errors = push(operator, 400, file=upload(), dest="/etc/x.conf", hosts=["10.9.9.9", "nope!"])
    assert set(errors) == {"hosts"} and len(errors["hosts"]) == 2
    errors = push(operator, 400, file=upload(), dest="/etc/x.conf", hosts=IPS, mode="999",
                  batch=0, max_failures=-1)  # fmt: skip
    assert set(errors) == {"mode", "batch", "max_failures"}
    errors = push(operator, 400, file=upload(), dest="/etc/x.conf")
    assert errors == {"hosts": ["no target hosts given (hosts, groups, where or all)"]}
    # JSON cannot carry the upload.
    response = operator.post("/api/jobs/push/", {"dest": "/x", "hosts": IPS}, "json")
    assert response.status_code == 415
    assert not file_jobs()
    assert blob_count() == blobs


def test_push_and_fetch_need_the_run_command_permission(client_with, hosts):
    collector = client_with("jobs.collect_facts", "jobs.view_job", "jobs.view_hosttask",
                            "jobs.view_output")  # fmt: skip
    upload = io.BytesIO(b"data")
    upload.name = "f"

    assert collector.post("/api/jobs/push/", {"file": upload, "dest": "/f", "hosts": IPS},
                          format="multipart").status_code == 403  # fmt: skip
    assert collector.post("/api/jobs/fetch/", {"path": "/f", "hosts": IPS},
                          "json").status_code == 403  # fmt: skip
    assert client_with().post("/api/jobs/fetch/", {}, "json").status_code == 403
    from rest_framework.test import APIClient

    assert APIClient().post("/api/jobs/fetch/", {}, "json").status_code == 401
    # Reading what a fetch brought back takes seeing the job and reading the hosts' output.
    job = Job.objects.create(kind="fetch", command="fetch", timeout=5, reach_timeout=5)
    jobs_only = client_with("jobs.view_job")
    assert jobs_only.get(f"/api/jobs/{job.pk}/files/").status_code == 403
    assert collector.get(f"/api/jobs/{job.pk}/files/").status_code == 404
    job.delete()
    assert not file_jobs()


def test_fetch_keeps_each_hosts_file_on_the_server_for_download(operator, hosts, roots):
    for ip, root in roots.items():
        (root / "var/log").mkdir(parents=True, exist_ok=True)
        (root / "var/log/app.log").write_bytes(f"log of {ip}\n".encode() + os.urandom(3 * MB))

    job = finished(operator, fetch(operator, path="/var/log/app.log", hosts=IPS))

    assert {t["state"] for t in job["tasks"]} == {State.OK}
    for task in job["tasks"]:
        expected = (roots[task["host"]] / "var/log/app.log").read_bytes()
        sha = hashlib.sha256(expected).hexdigest()
        assert task["file"]["sha256"] == sha and task["file"]["size"] == len(expected)
        response = operator.get(task["file"]["download"])
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == expected
        assert (
            response["Repr-Digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(sha)).decode()}:"
        )
        assert f'filename="{task["host"]}-app.log"' in response["Content-Disposition"]
    # All of them at once: a tar of <ip>/<name> and SHA256SUMS, streamed.
    response = operator.get(f"/api/jobs/{job['id']}/files/", HTTP_ACCEPT="application/x-tar")
    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert set(members) == {f"{ip}/app.log" for ip in IPS} | {"SHA256SUMS"}
    for ip, root in roots.items():
        assert members[f"{ip}/app.log"] == (root / "var/log/app.log").read_bytes()
    assert members["SHA256SUMS"].decode().splitlines() == [
        f"{t['file']['sha256']}  {t['host']}/app.log" for t in job["tasks"]
    ]
    # The copies live under FETCH_DIR/<job id>/<ip>/; once removed, the download says so.
    stored = HostTask.objects.get(task_id=job["tasks"][0]["task_id"]).fetched["path"]
    assert job["id"] in stored
    os.unlink(stored)
    gone = operator.get(job["tasks"][0]["file"]["download"])
    assert gone.status_code == 410 and gone.json()["detail"]


def test_a_fetch_that_cannot_read_the_file_fails_and_has_nothing_to_download(
    operator, hosts, roots
):
    assert fetch(operator, 400, path="var/log/x", hosts=IPS) == {
        "path": ["give an absolute path (it starts with /)"]
    }

    job = finished(operator, fetch(operator, path="/var/log/missing.log", hosts=IPS[:1]))

    task = job["tasks"][0]
    assert task["state"] == State.ERROR and "missing.log" in task["error"]
    assert task["file"] is None
    response = operator.get(f"/api/host-tasks/{task['task_id']}/file/")
    assert response.status_code == 404
    assert "no fetched file" in response.json()["detail"]
    assert operator.get(f"/api/jobs/{job['id']}/files/").status_code == 404


def test_a_server_that_cannot_sign_answers_503_and_uploads_nothing(
    operator, settings, tmp_path, redis_url
):
    make_host(IPS[0])
    missing = tmp_path / "no-such-key"
    settings.CMDB = {**settings.CMDB, "SIGNING_KEY": str(missing), "SIGNING_KEY_CREATE": False}
    upload = io.BytesIO(b"x" * 1000)
    upload.name = "x.conf"
    blobs = blob_count()

    for response in (
        operator.post("/api/jobs/push/", {"file": upload, "dest": "/etc/x.conf", "hosts": IPS[:1]},
                      format="multipart"),
        operator.post("/api/jobs/fetch/", {"path": "/etc/x.conf", "hosts": IPS[:1]}, "json"),
        operator.post("/api/jobs/", {"command": "true", "hosts": IPS[:1]}, "json"),
    ):  # fmt: skip
        assert response.status_code == 503, response.content
        assert f"CMDB_SIGNING_KEY={missing} does not exist" in response.json()["detail"]
    assert blob_count() == blobs
    assert not Job.objects.filter(host_tasks__ip=IPS[0]).exists()


def test_an_upload_over_the_limit_is_413_and_a_damaged_archive_400(operator, settings, redis_url):
    make_host(IPS[0])
    settings.CMDB = {**settings.CMDB, "MAX_UPLOAD_BYTES": 10_000}
    big = io.BytesIO(b"x" * 10_001)
    big.name = "big.bin"
    blobs = blob_count()

    too_big = operator.post("/api/jobs/push/", {"file": big, "dest": "/x", "hosts": IPS[:1]},
                            format="multipart")  # fmt: skip
    assert too_big.status_code == 413
    assert "CMDB_MAX_UPLOAD_BYTES (10000 bytes)" in too_big.json()["detail"]
    bomb = tar_upload({"zeros": b"\0" * 100_000})  # small upload, too big unpacked
    errors = push(operator, 400, file=bomb, dest="/srv/x", archive="true", hosts=IPS[:1])
    assert "unpacks to 100000 bytes" in errors["file"][0]
    truncated = io.BytesIO(tar_upload({"a": os.urandom(5000)}).getvalue()[:-100])
    truncated.name = "cut.tar.gz"
    errors = push(operator, 400, file=truncated, dest="/srv/x", archive="true", hosts=IPS[:1])
    assert errors["file"][0].startswith("not a readable tar archive")
    assert blob_count() == blobs
    assert not file_jobs()
