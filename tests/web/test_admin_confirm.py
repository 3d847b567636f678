"""The admin's host actions: rolling fields, and the confirmation step a large job needs
(Django's test client through the admin's actions, to the suite's real agents)."""

import pytest
from django.contrib.auth.models import User

from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.factories import make_host
from tests.support.fleet import AGENT_IPS, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

CHANGELIST = "/admin/hosts/host/"


@pytest.fixture
def admin_client(client, fleet, settings):
    # The suite has two agents: above one host, a job needs confirming here.
    settings.CMDB = {**settings.CMDB, "CONFIRM_ABOVE": 1}
    client.force_login(User.objects.create_superuser("ops", "ops@example.invalid", "x"))
    return client


@pytest.fixture
def hosts(fleet):
    return [make_host(ip) for ip in AGENT_IPS]


def act(client, action: str, hosts, **fields):
    selected = {"action": action, "_selected_action": [h.pk for h in hosts]}
    return client.post(CHANGELIST, {**selected, **fields}, follow=True)


def users_jobs():
    return list(Job.objects.filter(requested_by="ops"))


def ended(job: Job) -> list[HostTask]:
    wait_for(lambda: all(t.is_terminal for t in job.host_tasks.all()), 60, f"job {job.pk}")
    return list(job.host_tasks.order_by("ip"))


def test_a_run_above_the_ceiling_comes_back_to_confirm_and_runs_when_confirmed(admin_client, hosts):
    fields = {"apply": "1", "command": "echo hi", "timeout": "30", "batch": "50%"}

    page = act(admin_client, "run_command", hosts, **fields)

    text = page.content.decode()
    assert page.status_code == 200 and not users_jobs()
    assert ("2 hosts are more than the 1 you may reach without confirming: check the selection, "
            "tick &quot;confirm&quot; and Run again.") in text  # fmt: skip
    assert "confirm: reach 2 hosts" in text and 'name="confirm"' in text
    # The same form, filled in, with the selected hosts carried along.
    assert 'value="echo hi"' in text and 'value="50%"' in text
    assert all(f'name="_selected_action" value="{h.pk}"' in text for h in hosts)
    # Sent again unticked: asked again.
    assert "confirm: reach 2 hosts" in act(admin_client, "run_command", hosts,
                                           **fields).content.decode()  # fmt: skip
    assert not users_jobs()

    page = act(admin_client, "run_command", hosts, **fields, confirm="on")

    (job,) = users_jobs()
    assert page.redirect_chain[-1][0] == f"/jobs/{job.pk}/"
    assert "Rolling: batch 50% (1 host)." in page.content.decode()
    tasks = ended(job)
    assert [(t.state, t.batch) for t in tasks] == [(State.OK, 0), (State.OK, 1)]
    assert tasks[1].started_at >= tasks[0].finished_at


def test_a_collection_from_the_list_asks_to_confirm_on_a_page_of_its_own(admin_client, hosts):
    page = act(admin_client, "collect_facts", hosts)

    text = page.content.decode()
    assert "confirm: reach 2 hosts" in text and 'value="Collect" id="collectfacts-submit"' in text
    assert not users_jobs()
    # Within the ceiling, it goes at once, as before.
    act(admin_client, "collect_facts", hosts[:1])
    assert [j.kind for j in users_jobs()] == ["collect"]

    act(admin_client, "collect_facts", hosts, apply="1", confirm="on")

    assert sorted(len(ended(j)) for j in users_jobs()) == [1, 2]


def test_a_fetch_and_a_push_ask_too_and_a_push_says_to_choose_the_file_again(
    admin_client, hosts, tmp_path
):
    fetch = act(admin_client, "fetch_file", hosts, apply="1", path="/etc/hostname")
    assert "confirm: reach 2 hosts" in fetch.content.decode()
    upload = tmp_path / "motd"
    upload.write_text("hi\n")
    with upload.open("rb") as f:
        push = act(admin_client, "push_file", hosts, apply="1", file=f, dest=str(tmp_path / "x"))
    text = push.content.decode()
    assert "confirm: reach 2 hosts" in text
    assert "Choose the file again: a browser never sends it twice." in text
    assert not users_jobs()


def test_wrong_rolling_fields_are_said_on_the_form_and_nothing_runs(admin_client, hosts):
    page = act(admin_client, "run_command", hosts, apply="1", command="true", timeout="30",
               batch="0", max_failures="x%", canary="0")  # fmt: skip

    text = page.content.decode()
    assert "batch must be a number of hosts (1 or more)" in text
    assert "max failures must be a number of hosts (0 or more)" in text
    assert "Ensure this value is greater than or equal to 1." in text
    alone = act(admin_client, "run_command", hosts, apply="1", command="true", timeout="30",
                max_failures="1")  # fmt: skip
    assert "max failures needs a batch or a canary too" in alone.content.decode()
    assert not users_jobs()
