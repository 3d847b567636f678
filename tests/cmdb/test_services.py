"""cmdb.jobs.services: one order per action, whatever the front-end, and the drifts the
front-ends' own copies had (an admin push uploading for a server that cannot sign, no early 413
in the admin, a CLI cancel with a traceback when the broker is down)."""

import io
import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import User

from cmdb.celery import app
from cmdb.jobs import services
from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.exceptions import CannotSign, NotFound, Refused, TooLarge
from cmdb.jobs.models import HostTask, Job
from cmdb.jobs.services import Targets, Upload
from tests.support.api import make_job
from tests.support.factories import make_host
from tests.support.fleet import ROOT, free_port

IP = "127.0.1.70"


def blob_count() -> int:
    with redis_client(app) as client:
        return len(client.keys("cmdb:blob:*:meta"))


@pytest.fixture
def no_signing_key(settings, tmp_path):
    settings.CMDB = {**settings.CMDB, "SIGNING_KEY": str(tmp_path / "missing"),
                     "SIGNING_KEY_CREATE": False}  # fmt: skip


def upload(data: bytes = b"content\n") -> Upload:
    return Upload(io.BytesIO(data), "app.conf", len(data))


@pytest.mark.django_db
def test_a_push_checks_everything_before_it_uploads_and_names_every_problem(redis_url):
    before = blob_count()

    with pytest.raises(Refused) as refused:
        services.push(upload(), "etc/app.conf", Targets(hosts=["127.0.1.254"], batch=0), "t",
                      mode="0999", owner="root;rm")  # fmt: skip

    assert set(refused.value.by_field) == {"dest", "mode", "owner", "targets", "batch"}
    assert blob_count() == before and not Job.objects.exists()


@pytest.mark.django_db
def test_an_upload_over_the_limit_is_too_large_before_anything_else(settings, redis_url):
    settings.CMDB = {**settings.CMDB, "MAX_UPLOAD_BYTES": 4}
    with pytest.raises(TooLarge, match=r"CMDB_MAX_UPLOAD_BYTES \(4 bytes\)"):
        services.push(upload(b"12345"), "/etc/x", Targets(hosts=[IP]), "t")


@pytest.mark.django_db
def test_a_server_that_cannot_sign_uploads_and_records_nothing(no_signing_key, redis_url):
    make_host(IP)
    before = blob_count()

    for action in (
        lambda: services.push(upload(), "/etc/app.conf", Targets(hosts=[IP]), "t"),
        lambda: services.run("true", Targets(hosts=[IP]), "t"),
        lambda: services.fetch("/etc/hostname", Targets(hosts=[IP]), "t"),
    ):
        with pytest.raises(CannotSign, match="does not exist"):
            action()

    assert blob_count() == before and not Job.objects.exists()


@pytest.mark.django_db
def test_an_unknown_id_is_not_found():
    with pytest.raises(NotFound, match="no job or host task has the id 'nope'"):
        services.cancel("nope")


@pytest.mark.django_db
def test_the_admin_push_checks_the_key_before_it_uploads(client, no_signing_key, redis_url):
    """The drift: the admin uploaded first and left a blob in Redis for 6 hours."""
    client.force_login(User.objects.create_superuser("ops", "ops@example.invalid", "x"))
    host, before = make_host(IP), blob_count()
    file = io.BytesIO(b"x" * 1000)
    file.name = "app.conf"

    page = client.post("/admin/hosts/host/", {"action": "push_file", "apply": "1",
                       "_selected_action": [host.pk], "file": file, "dest": "/etc/app.conf"},
                       follow=True)  # fmt: skip

    assert "nothing dispatched: the signing key" in page.content.decode().lower()
    assert blob_count() == before and not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/hosts/host/", "/api/jobs/push/"])
def test_a_body_over_the_upload_limit_is_413_before_it_is_read(client, settings, path):
    settings.CMDB = {**settings.CMDB, "MAX_UPLOAD_BYTES": 1000}
    client.force_login(User.objects.create_superuser("ops", "ops@example.invalid", "x"))

    answer = client.generic("POST", path, b"x" * (1000 + (1 << 20) + 1),
                            content_type="multipart/form-data; boundary=b")  # fmt: skip

    assert answer.status_code == 413
    assert b"CMDB_MAX_UPLOAD_BYTES (1000 bytes)" in answer.content
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_cancel_while_the_broker_is_down_says_so_with_exit_3(process_env, cli_user):
    make_host(IP)
    job = make_job(IP, state=State.PENDING)
    env = {**os.environ, **process_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

    out = subprocess.run([sys.executable, str(ROOT / "manage.py"), "cancel", str(job.pk)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)  # fmt: skip

    assert out.returncode == 3, out.stderr
    assert "broker unreachable" in out.stderr and "Traceback" not in out.stderr
    assert HostTask.objects.get(job=job).state == State.PENDING


@pytest.mark.django_db
def test_a_source_this_server_cannot_read_is_refused_not_blamed_on_the_broker(redis_url):
    make_host(IP)

    with pytest.raises(Refused) as refused:
        services.push("/proc/self/mem", "/etc/x", Targets(hosts=[IP]), "t")

    assert list(refused.value.by_field) == ["source"]
    assert "cannot read '/proc/self/mem'" in refused.value.problems[0]
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("owner", ["www-data", "0:0", ":adm", "root:", ""])
def test_every_owner_chown_takes_is_accepted(owner):
    with pytest.raises(Refused) as refused:  # refused for its target only
        services.push(upload(), "/etc/x", Targets(hosts=["127.0.1.254"]), "t", owner=owner)
    assert set(refused.value.by_field) == {"targets"}


@pytest.mark.parametrize("value, on", [("", True), ("1", True), ("no", True), ("0", False)])
def test_only_zero_turns_the_monitor_off(value, on):
    code = "from cmdb import settings; print(settings.CMDB['MONITOR'])"
    env = {**os.environ, "CMDB_MONITOR": value}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.split() == [str(on)]
