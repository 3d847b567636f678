"""The admin's push action with a folder (a tar), through Django's test client and a real agent."""

import os

import pytest
from django.contrib.auth.models import User

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.factories import make_host, tar_upload
from tests.support.fleet import AGENT_IPS, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin_client(client, fleet):
    client.force_login(User.objects.create_superuser("ops", "ops@example.invalid", "x"))
    return client


def push(admin_client, host, **fields):
    return admin_client.post("/admin/hosts/host/", {
        "action": "push_file", "apply": "1", "_selected_action": [host.pk], **fields,
    }, follow=True)  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="the owner (nobody) is set only by a root agent")
def test_a_folder_pushed_from_the_admin_as_a_tar_is_unpacked_on_the_host(admin_client, tmp_path):
    host = make_host(AGENT_IPS[0])
    site = tmp_path / "srv" / "site"

    page = push(admin_client, host, file=tar_upload({"index.html": b"<h1>hi</h1>\n"}),
                dest=str(site), archive="on", owner="nobody", mode="0755")  # fmt: skip

    assert page.status_code == 200
    task = HostTask.objects.get(job__kind="push")
    wait_for(lambda: HostTask.objects.get(pk=task.pk).is_terminal, 60, "the push")
    task.refresh_from_db()
    assert task.state == State.OK, task.error
    assert (site / "index.html").read_bytes() == b"<h1>hi</h1>\n"
    assert (site / "index.html").stat().st_uid == 65534  # the owner, all through the folder


def test_an_unsafe_tar_is_refused_in_the_admin_and_nothing_is_sent(admin_client, tmp_path):
    host = make_host(AGENT_IPS[0])

    page = push(admin_client, host, file=tar_upload({"../evil": b"x"}), dest=str(tmp_path / "x"),
                archive="on")  # fmt: skip

    assert "Nothing pushed: unsafe archive member" in page.content.decode()
    assert not Job.objects.filter(kind="push").exists()
