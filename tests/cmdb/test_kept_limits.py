"""Kept output (cmdb.jobs.kept) is bounded: a job keeping more than CMDB_KEEP_OUTPUT_JOB_BYTES is
refused at dispatch, nothing is written under CMDB_OUTPUT_MIN_FREE_BYTES free, and a job's files
go CMDB_OUTPUT_KEEP_DAYS after it."""

import io
import os
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from cmdb.jobs import kept, services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.exceptions import Refused
from cmdb.jobs.models import HostTask, Job
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db

IP = "127.0.3.1"


def kept_task(created=None) -> HostTask:
    job = Job.objects.create(kind=JobKindChoices.COMMAND, command="seq 9", timeout=30,
                             reach_timeout=30, params={"keep_output": 1 << 20})  # fmt: skip
    if created is not None:
        Job.objects.filter(pk=job.pk).update(created=created)
    return HostTask.objects.create(job=job, ip=IP, task_id=str(uuid.uuid4()), state=State.OK)


@pytest.fixture
def out_dir(settings, tmp_path):
    settings.CMDB = {**settings.CMDB, "OUTPUT_DIR": tmp_path / "output"}
    return tmp_path / "output"


def test_a_wide_job_keeps_its_share_of_the_total(settings, redis_url):
    for i in range(3):
        make_host(f"127.0.3.{i + 1}")
    cap = settings.CMDB["KEEP_OUTPUT_MAX_BYTES"]
    settings.CMDB = {**settings.CMDB, "KEEP_OUTPUT_JOB_BYTES": 2 * cap * 2}  # two hosts' worth
    targets = services.Targets(hosts=[f"127.0.3.{i + 1}" for i in range(3)])
    job = services.run("seq 9", targets, "tester", keep_output=True)
    assert job.params["keep_output"] == 2 * cap * 2 // 6  # a third less than the cap each


def test_a_job_whose_share_is_too_small_is_refused_by_name(settings):
    for i in range(3):
        make_host(f"127.0.3.{i + 1}")
    settings.CMDB = {**settings.CMDB, "KEEP_OUTPUT_JOB_BYTES": 3 << 20}  # 0.5 MiB a stream
    before = Job.objects.count()
    targets = services.Targets(hosts=[f"127.0.3.{i + 1}" for i in range(3)])
    with pytest.raises(Refused) as refused:
        services.run("seq 9", targets, "tester", keep_output=True)
    assert "CMDB_KEEP_OUTPUT_JOB_BYTES" in str(refused.value.by_field["keep_output"])
    assert Job.objects.count() == before  # nothing recorded


def test_nothing_is_kept_when_the_disk_is_nearly_full(settings, out_dir):
    task = kept_task()
    kept.keep(task, "stdout", 0, b"one\n")
    with kept.open_kept(task) as f:
        assert f.read() == b"one\n"
    settings.CMDB = {**settings.CMDB, "OUTPUT_MIN_FREE_BYTES": 1 << 62}  # more than any disk
    kept.keep(task, "stdout", 4, b"two\n")
    with kept.open_kept(task) as f:
        assert f.read() == b"one\n"


def test_kept_outputs_go_after_their_keeping_days(out_dir):
    now = timezone.now()
    old, recent = kept_task(now - timedelta(days=8)), kept_task(now - timedelta(days=6))
    for task in (old, recent):
        kept.keep(task, "stdout", 0, b"out\n")
    stray = out_dir / "not-a-job"
    stray.mkdir()
    os.utime(stray, (0, 0))  # a folder of no job, old: it goes too
    (out_dir / "link").symlink_to(out_dir / str(recent.job_id))  # never followed

    assert kept.remove_expired(7, now) == 2
    assert kept.remove_expired(7, now) == 0
    assert kept.remove_expired(0, now + timedelta(days=99)) == 0  # 0: for ever
    assert not (out_dir / str(old.job_id)).exists() and not stray.exists()
    with kept.open_kept(recent) as f:
        assert f.read() == b"out\n"


def test_reading_kept_output_is_in_the_audit_trail(out_dir):
    import io

    from cmdb.audit.models import AuditEntry
    from tests.support.api import make_user, token_client

    task = kept_task()
    HostTask.objects.filter(pk=task.pk).update(host=make_host(IP))
    kept.keep(task, "stdout", 0, b"secret\n")
    reader = token_client(make_user("jobs.view_hosttask", "jobs.view_job", "jobs.view_output"))
    answer = reader.get(f"/api/host-tasks/{task.task_id}/output/")
    assert b"".join(answer.streaming_content) == b"secret\n"
    entry = AuditEntry.objects.get(action="download")
    assert (entry.job_id, entry.targets_resolved) == (task.job_id, [IP])
    assert entry.detail["output"] == ["stdout"] and entry.detail["tasks"] == [task.task_id]

    assert kept.write_full(io.StringIO(), services.find(task.task_id)) == kept.EXIT_OK
    assert AuditEntry.objects.filter(action="download").count() == 2


def test_full_output_on_a_terminal_has_its_control_characters_escaped(out_dir):
    import pty

    task = kept_task()
    raw = b"ok \x1b]0;owned\x07\x1b[2J \xe2\x82\xac\n"
    kept.keep(task, "stdout", 0, raw)
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "wb", buffering=0) as tty, kept.open_kept(task) as f:
            kept.copy(f, tty)
            got = os.read(leader, 4096)
    finally:
        os.close(leader)
    assert b"\x1b" not in got and b"\x07" not in got
    assert b"\\x1b]0;owned\\x07\\x1b[2J" in got and "€".encode() in got
    redirected = io.BytesIO()
    with kept.open_kept(task) as f:
        kept.copy(f, redirected)
    assert redirected.getvalue() == raw  # `> file`: the bytes as they are


def test_kept_output_is_written_only_in_folders_and_files_ours_alone(out_dir, tmp_path):
    task = kept_task()
    kept.keep(task, "stdout", 0, b"one\n")
    job_dir = out_dir / str(task.job_id)
    assert os.stat(out_dir).st_mode & 0o777 == 0o700 and os.stat(job_dir).st_mode & 0o777 == 0o700

    # A hard link someone made to another file: not written through, not read.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    os.link(victim, job_dir / f"{task.task_id}.stderr")
    kept.keep(task, "stderr", 0, b"evil\n")
    assert victim.read_bytes() == b"precious\n"
    with pytest.raises(PermissionError):
        kept.open_kept(task, "stderr")

    os.chmod(job_dir, 0o755)  # a folder others may read: refused
    with pytest.raises(PermissionError):
        kept.open_kept(task)
    os.chmod(job_dir, 0o700)
    os.chmod(out_dir, 0o770)
    kept.keep(task, "stdout", 4, b"two\n")
    os.chmod(out_dir, 0o700)
    with kept.open_kept(task) as f:
        assert f.read() == b"one\n"


def test_a_kept_folder_another_may_write_is_not_served_and_says_why(out_dir, capsys):
    from tests.support.api import make_user, token_client

    task = kept_task()
    HostTask.objects.filter(pk=task.pk).update(host=make_host(IP))
    kept.keep(task, "stdout", 0, b"secret-free output\n")
    job_dir = out_dir / str(task.job_id)
    reader = token_client(make_user("jobs.view_job", "jobs.view_hosttask", "jobs.view_output"))
    url = f"/api/host-tasks/{task.task_id}/output/"
    assert b"".join(reader.get(url).streaming_content) == b"secret-free output\n"

    job_dir.chmod(0o777)  # as if another user could have swapped what is in it
    answer = reader.get(url)
    assert answer.status_code == 503, answer.content
    assert "not the server's alone" in answer.json()["detail"]
    assert str(out_dir) not in answer.json()["detail"]  # which path: the server's log only

    found = services.find(str(task.job_id), None)
    assert kept.write_full(io.StringIO(), found) == kept.EXIT_NONE
    assert "not ours alone" in capsys.readouterr().err
