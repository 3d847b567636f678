"""What a host sends must not reach where it does harm: the operator's terminal, every host's
journal; and the record of who ran what cannot be deleted in the admin."""

import re
import uuid

import pytest
from django.contrib.auth.models import User

from cmdb.jobs import report
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from tests.support.api import make_job
from tests.support.cli import dispatch, wait_job
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS

OSC52 = "\x1b]52;c;ZXZpbA==\x07"  # "write evil to the clipboard"


def test_check_task_shows_a_hosts_escape_sequences_instead_of_sending_them():
    task = HostTask(ip="127.0.1.9", state=State.FAILED, exit_code=1,
                    stdout_head=f"before{OSC52}after\r\n\x9b2J", stderr_head="\x1b[2Kgone\n",
                    error="agent error: \x1b]0;title\x07")  # fmt: skip

    shown = report.format_task(task)

    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", shown), repr(shown)
    assert "before\\x1b]52;c;ZXZpbA==\\x07after\\x0d" in shown and "\\x9b2J" in shown
    assert "\\x1b[2Kgone" in shown and "title\\x07" in shown


@pytest.mark.fleet
@pytest.mark.django_db(transaction=True)
def test_command_output_stays_out_of_the_agents_log(fleet, manage):
    make_host(AGENT_IPS[0])
    marker = f"secret-{uuid.uuid4().hex}"

    job_id = dispatch(manage, f"echo {marker}", AGENT_IPS[0])
    data, _ = wait_job(manage, job_id)

    task_id = data["tasks"][0]["task_id"]
    assert data["tasks"][0]["stdout"]["head"] == f"{marker}\n"
    log = (fleet.logs / f"agent-{AGENT_IPS[0]}.log").read_text()
    assert re.search(rf"{task_id}\] succeeded in [\d.]+s$", log, re.M)  # it does log, at info
    assert marker not in log


@pytest.mark.django_db
def test_the_record_of_who_ran_what_cannot_be_deleted_in_the_admin(client):
    client.force_login(User.objects.create_superuser("ops", "ops@example.invalid", "x"))
    make_host("127.0.1.9")
    job = make_job("127.0.1.9")
    task = job.host_tasks.get()

    assert client.post(f"/admin/jobs/job/{job.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (
        client.post(f"/admin/jobs/hosttask/{task.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    bulk = client.post("/admin/jobs/job/", {"action": "delete_selected", "post": "yes",
                                            "_selected_action": [job.pk]})  # fmt: skip
    assert bulk.status_code in (200, 302)
    assert HostTask.objects.filter(pk=task.pk).exists() and job.host_tasks.exists()
