"""Review of issue 18's parts (the token endpoint, writable inventory, live events): attacks
that got through, each kept as a test."""

import pytest
from rest_framework.test import APIClient

from cmdb.access import attempts
from tests.support.api import make_user

pytestmark = pytest.mark.django_db


def login(client, username, password, address="127.0.0.1"):
    return client.post("/api/token/", {"username": username, "password": password},
                       format="json", REMOTE_ADDR=address)  # fmt: skip


def test_parallel_guesses_do_not_pass_the_limit(login_counts, monkeypatch):
    """A password's check takes a hash's time: guesses sent in parallel all read the count
    before any of them wrote it. Here the last allowed guess is being checked while another
    arrives (a request made from inside the first's check): the second must wait."""
    from cmdb.api import token

    make_user(username="alice")
    anonymous = APIClient()
    for i in range(attempts.PER_USERNAME - 1):
        assert login(anonymous, "alice", f"guess{i}", address=f"127.0.5.{i}").status_code == 400
    real, nested = token.authenticate, []

    def slow_check(request, **credentials):
        if not nested:
            nested.append(None)
            nested[0] = login(anonymous, "alice", "parallel", address="127.0.6.1").status_code
        return real(request, **credentials)

    monkeypatch.setattr(token, "authenticate", slow_check)
    assert login(anonymous, "alice", "last", address="127.0.6.2").status_code == 400
    assert nested == [429]
    # And a success gives its attempt back: logging in does not use up one's own attempts.
    monkeypatch.setattr(token, "authenticate", real)
    login_counts.flushdb()
    for _ in range(attempts.PER_USERNAME + 2):
        assert login(anonymous, "alice", "pw").status_code == 200


def test_the_admins_login_page_is_limited_as_the_token_endpoint(login_counts):
    """The same passwords log into /admin/ (and the web console): guessing them there must
    not be unlimited while the token endpoint is limited."""
    from django.test import Client

    make_user(username="root", superuser=True)
    browser = Client()

    def admin_login(password, address="127.0.0.1"):
        return browser.post("/admin/login/", {"username": "root", "password": password},
                            REMOTE_ADDR=address)  # fmt: skip

    pages = [admin_login(f"guess{i}") for i in range(attempts.PER_ADDRESS + 1)]
    assert all(p.status_code == 200 for p in pages)  # the form again, with its error
    assert all(b"too many failed logins" not in p.content for p in pages[:-1])
    assert b"too many failed logins" in pages[-1].content
    # The right password waits too, from this address and (per username) from any other.
    assert b"too many failed logins" in admin_login("pw").content
    assert admin_login("pw", address="127.0.7.1").status_code == 200
    login_counts.flushdb()
    assert admin_login("pw").status_code == 302  # logged in


def test_a_new_ip_cannot_move_a_host_into_a_grant_giving_more_than_one_holds():
    """A grant may narrow by ip (all hosts where ip~10.9.8.): changing a host's IP moves it
    into (or out of) such a grant as adding it to a group does, so the same rule holds: the
    actor must hold on the host every action that the move gives or takes."""
    from cmdb.access.models import Action, Grant
    from cmdb.audit.models import AuditEntry
    from cmdb.hosts.models import Host
    from tests.support.api import make_group, token_client
    from tests.support.factories import make_host

    host = make_host("10.9.7.1")
    web = make_group("web", host)
    perms = ("hosts.view_host", "hosts.change_host", "hosts.change_host_ip")
    alice = make_user(*perms, username="alice", everywhere=False)
    bob = make_user(username="bob", everywhere=False)
    mine = Grant.objects.create(actions=[Action.VIEW, Action.KEYS, Action.RUN])
    mine.host_groups.add(web)
    mine.users.add(alice)
    pushers = Grant.objects.create(actions=[Action.VIEW, Action.PUSH], all_hosts=True,
                                   where=["ip~10.9.8."])  # fmt: skip
    pushers.users.add(bob)
    api = token_client(alice)

    moved = api.patch(f"/api/hosts/{host.pk}/", {"ip": "10.9.8.5"}, format="json")
    assert moved.status_code == 403, moved.content
    assert "push" in moved.json()["ip"][0] and "10.9.8.5" in moved.json()["ip"][0]
    assert Host.objects.get(pk=host.pk).ip == "10.9.7.1"
    refused = AuditEntry.objects.filter(outcome="refused", username="alice")
    assert refused.count() == 1 and "10.9.8.5" in str(refused[0].detail)
    # Where no grant changes, or one holds what they give, the move is made.
    assert api.patch(f"/api/hosts/{host.pk}/", {"ip": "10.9.7.2"},
                     format="json").status_code == 200  # fmt: skip
    mine.actions = [*mine.actions, Action.PUSH]
    mine.save()
    assert api.patch(f"/api/hosts/{host.pk}/", {"ip": "10.9.8.5"},
                     format="json").status_code == 200  # fmt: skip


def _events(job_id, task_ips, output=True, after="0-0"):
    from types import SimpleNamespace

    from cmdb.api import live as api_live

    answer = api_live.events_response(SimpleNamespace(pk=job_id), task_ips, set(), output, after)
    return b"".join(answer.streaming_content).decode()


@pytest.mark.usefixtures("redis_url")
def test_the_truncated_event_names_no_task_of_a_host_one_may_not_view():
    """The job's one "truncated" event names the task whose chunk crossed the budget: that
    may be a host the reader may not view, whose task id is not theirs to know."""
    import uuid

    from cmdb.jobs import live

    job = uuid.uuid4().hex
    live.publish([(job, {"type": "truncated", "task": "hidden-task", "budget": 100})])
    body = _events(job, {"t0": "10.0.0.9"})
    assert "event: truncated" in body and '"budget": 100' in body
    assert "hidden-task" not in body, body
    live.publish([(job, {"type": "truncated", "task": "t0", "budget": 100})])
    assert '"host": "10.0.0.9"' in _events(job, {"t0": "10.0.0.9"})


@pytest.mark.usefixtures("redis_url")
def test_a_stream_slot_given_back_after_its_count_expired_gives_no_slot_more():
    """A slot's count expires (a web worker killed mid-answer must not lock its user out for
    ever); an answer that ends after that (a slow reader) must not make the count -1 with no
    expiry: one stream more for its user, for ever, and one more each time."""
    from cmdb.celery import app
    from cmdb.jobs import live
    from cmdb.jobs.broker import redis_client

    user = f"review18-{id(object())}"
    first = live.take_slot(user, 1, 60)
    assert first is not None and live.take_slot(user, 1, 60) is None
    with redis_client(app) as client:
        client.delete(live.SLOTS_KEY.format(user=user))  # expired while still being sent
    live.give_back(first)
    assert live.take_slot(user, 1, 60) is not None
    assert live.take_slot(user, 1, 60) is None  # still one at most
    with redis_client(app) as client:
        client.delete(live.SLOTS_KEY.format(user=user))


@pytest.mark.usefixtures("redis_url")
@pytest.mark.parametrize("after", ["1-2-3", "-", "--", "-1", "1-", "99999999999999999999999-0"])
def test_a_malformed_cursor_reads_from_the_start_not_a_broken_stream(after):
    """`after` (or Last-Event-ID) is the client's: one Redis refuses as a stream ID made the
    answer break after its 200, with a traceback in the server's log, for each request."""
    import uuid

    from django.test import RequestFactory

    from cmdb.api.live import cursor_of
    from cmdb.jobs import live

    job = uuid.uuid4().hex
    live.publish([(job, {"type": "task", "task": "t0", "state": "ok"})])
    for request in (RequestFactory().get("/", {"after": after}),
                    RequestFactory().get("/", HTTP_LAST_EVENT_ID=after)):  # fmt: skip
        assert "event: task" in _events(job, {"t0": "10.0.0.9"}, after=cursor_of(request))


def test_cancelling_a_job_by_the_api_names_no_host_one_may_not_view(monkeypatch):
    """POST /api/jobs/{id}/cancel/ takes the job's host tasks one may view (its prefetch is
    narrowed): a refusal must not name the others, nor their tasks be stopped (a guard)."""
    import uuid

    from cmdb.access.models import Action, Grant
    from cmdb.jobs import dispatch
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.choices import JobKindChoices
    from cmdb.jobs.models import HostTask, Job
    from tests.support.api import make_group, token_client
    from tests.support.factories import make_host

    seen, hidden = make_host("10.9.9.1"), make_host("10.9.9.2")
    job = Job.objects.create(kind=JobKindChoices.COMMAND, command="sleep 60", timeout=90,
                             reach_timeout=30)  # fmt: skip
    for host in (seen, hidden):
        HostTask.objects.create(job=job, ip=host.ip, host=host, task_id=str(uuid.uuid4()),
                                state=State.RUNNING)  # fmt: skip
    carol = make_user("jobs.view_job", "jobs.view_hosttask", "jobs.cancel_job",
                      username="carol", everywhere=False)  # fmt: skip
    grant = Grant.objects.create(actions=[Action.VIEW, Action.CANCEL])
    grant.host_groups.add(make_group("mine", seen))
    grant.users.add(carol)
    asked = []
    monkeypatch.setattr(dispatch, "cancel", lambda tasks, app, actor: asked.extend(tasks) or 1)
    answer = token_client(carol).post(f"/api/jobs/{job.pk}/cancel/")
    assert "10.9.9.2" not in answer.content.decode(), answer.content
    assert answer.status_code == 202, answer.content
    assert [t.ip for t in asked] == ["10.9.9.1"]


def test_a_hosts_read_only_fields_are_not_written_by_post_nor_patch():
    """Mass assignment (a guard): keys, status, mode, agent fields and groups are read-only;
    a group is joined by the group's endpoint only (the members' rule)."""
    from cmdb.hosts.models import Host
    from tests.support.api import make_group, token_client
    from tests.support.factories import make_host

    make_group("prod", make_host("10.9.10.9"))
    api = token_client(make_user("hosts.view_host", "hosts.add_host", "hosts.change_host",
                                 "hosts.change_host_ip"))  # fmt: skip
    forged = {"key_state": "accepted", "agent_key": "x" * 44, "key_fingerprint": "SHA256:x",
              "agent_status": "online", "mode": "ssh", "ssh_user": "root", "ssh_port": 2222,
              "salt_minion": "evil", "groups": ["prod"], "agent_name": "a", "id": 999}  # fmt: skip
    made = api.post("/api/hosts/", {"ip": "10.9.10.1", **forged}, format="json")
    assert made.status_code == 201, made.content
    host = Host.objects.get(ip="10.9.10.1")
    changed = api.patch(f"/api/hosts/{host.pk}/", forged, format="json")
    assert changed.status_code == 200, changed.content
    host.refresh_from_db()
    assert (host.key_state, host.agent_key, host.agent_status, host.mode, host.agent_name) == (
        "none", "", "unknown", "agent", "")  # fmt: skip
    assert host.pk != 999 and not host.groups.exists()


def test_deleting_a_group_takes_what_emptying_it_takes():
    """PATCH hosts=[] is refused to one who does not hold the group's grants' actions on its
    members (it takes them away from the grantees); DELETE took them away as well, unchecked."""
    from cmdb.access.models import Action, Grant
    from cmdb.audit.models import AuditEntry
    from cmdb.hosts.models import HostGroup
    from tests.support.api import make_group, token_client
    from tests.support.factories import make_host

    seen, hidden = make_host("10.9.11.1"), make_host("10.9.11.2")
    prod = make_group("prod", seen, hidden)
    perms = ("hosts.view_host", "hosts.view_hostgroup", "hosts.change_hostgroup_members",
             "hosts.delete_hostgroup")  # fmt: skip
    dave = make_user(*perms, username="dave", everywhere=False)
    bob = make_user(username="bob", everywhere=False)
    Grant.objects.create(actions=[Action.VIEW, Action.RUN]).host_groups.add(prod)
    Grant.objects.get().users.add(bob)
    mine = Grant.objects.create(actions=[Action.VIEW])
    mine.host_groups.add(make_group("mine", seen))
    mine.users.add(dave)
    api = token_client(dave)
    assert api.patch(f"/api/host-groups/{prod.pk}/", {"hosts": []},
                     format="json").status_code == 403  # fmt: skip
    gone = api.delete(f"/api/host-groups/{prod.pk}/")
    assert gone.status_code == 403, gone.content
    text = gone.content.decode()
    assert "dave may not remove 10.9.11.1 from prod" in text and "10.9.11.2" not in text
    assert "members they may not view" in text  # neither named nor counted
    assert HostGroup.objects.filter(pk=prod.pk).exists()
    assert AuditEntry.objects.filter(outcome="refused", username="dave").count() == 2
    # Holding them on every member is enough.
    mine.host_groups.add(make_group("theirs", hidden))
    mine.actions = [Action.VIEW, Action.RUN]
    mine.save()
    assert api.delete(f"/api/host-groups/{prod.pk}/").status_code == 204
    # A group no grant refers to is removed by whoever may delete groups.
    empty = make_group("empty", seen, hidden)
    assert token_client(make_user("hosts.view_hostgroup", "hosts.delete_hostgroup",
                                  everywhere=False)).delete(
        f"/api/host-groups/{empty.pk}/").status_code == 204  # fmt: skip


@pytest.mark.usefixtures("redis_url")
def test_a_leaked_stream_slot_expires_even_while_its_user_keeps_streaming():
    """A slot is leaked when its web worker dies mid-answer (a restart): it must expire by
    itself. One count per user, its expiry renewed by each new stream, never expired while the
    job page (EventSource reconnecting every answer) stayed open: a few restarts and the user
    had no live output at all."""
    import time

    from cmdb.jobs import live

    user = f"review18-leak-{time.time_ns()}"
    assert live.take_slot(user, 2, 1) is not None  # leaked: never given back
    end = time.monotonic() + 2.5
    while time.monotonic() < end:  # the page's streams, one after another
        slot = live.take_slot(user, 2, 60)
        assert slot is not None
        live.give_back(slot)
        time.sleep(0.2)
    taken = [live.take_slot(user, 2, 60) for _ in range(3)]
    assert taken[0] is not None and taken[1] is not None and taken[2] is None
    for slot in taken[:2]:
        live.give_back(slot)


def test_the_key_accepted_at_a_hosts_new_ip_does_not_speak_for_tasks_sent_to_the_old_one(
    redis_url,
):
    """A host's tasks keep the IP they were sent to (their queue). After the host moved (its
    keys forgotten) and the agent at the new address was accepted, that other machine's key
    must not end, nor add output to, the tasks still waiting at the old address."""
    import time
    import uuid

    from cryptography.hazmat.primitives import serialization

    from cmdb.hosts.models import Host
    from cmdb.jobs import live, results
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.choices import JobKindChoices
    from cmdb.jobs.models import HostTask, Job
    from tests.support.factories import from_host, host_private_key, make_host
    from wire.messages import Outcome, Output, Report

    old, new = "127.0.1.97", "127.0.1.98"
    host = make_host(old, with_agent=False)
    job = Job.objects.create(kind=JobKindChoices.COMMAND, command="x", timeout=30,
                             reach_timeout=30)  # fmt: skip
    task = HostTask.objects.create(job=job, host=host, ip=old, task_id=str(uuid.uuid4()),
                                   state=State.RUNNING)  # fmt: skip
    make_host(new, with_agent=False).delete()  # a key of its own for the new address
    other = host_private_key(new)
    pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Moved (as PATCH ip does), then the agent at the new address registered and was accepted.
    Host.objects.filter(pk=host.pk).update(ip=new, agent_key=pem.decode(), key_state="accepted")
    now = time.time()
    report = Report(task_id=task.task_id, outcome=Outcome.OK, exit_code=0, started_at=now,
                    finished_at=now, duration=0.0)  # fmt: skip
    assert results.store_batch([], [from_host(task, report, key=other)]) == 0
    task.refresh_from_db()
    assert task.state == State.RUNNING
    chunk = Output(task_id=task.task_id, seq=1, elapsed=0.1, stdout="aGk=", stdout_at=0,
                   stderr="", stderr_at=0)  # fmt: skip
    assert live.relay([from_host(task, chunk, key=other)]) == 0
