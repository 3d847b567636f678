"""API test helpers: users with exactly the permissions a test gives, token clients, data."""

import time
import uuid
from datetime import timedelta

from django.contrib.auth.models import Permission, User
from django.utils import timezone
from django_celery_results.models import TaskResult
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from cmdb.access.models import Action, Grant
from cmdb.assets.models import Asset, Change, HostFacts
from cmdb.hosts.models import Host, HostGroup
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job

#: What a read-only operator is given: the view permission of every API resource.
VIEW_ALL = [
    "hosts.view_host",
    "hosts.view_hostgroup",
    "assets.view_asset",
    "assets.view_change",
    "jobs.view_job",
    "jobs.view_hosttask",
    "jobs.view_output",
]


def make_user(*perms: str, username: str | None = None, superuser: bool = False,
              everywhere: bool = True) -> User:  # fmt: skip
    """A user with exactly ``perms`` (what kinds of thing they may do) and, with
    ``everywhere``, a grant of every action on all hosts (where): the tests of grants
    themselves say where instead (cmdb.access)."""
    username = username or f"user-{uuid.uuid4().hex[:8]}"
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", "pw")
    user = User.objects.create_user(username, password="pw")
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    if everywhere:
        Grant.objects.create(actions=list(Action.values), all_hosts=True).users.add(user)
    return user


def token_client(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def poll(client: APIClient, url: str, until, timeout: float = 60, what: str = "") -> dict:
    """GET url until ``until(body)`` holds; return that body."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        if until(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or url}: {body}")
        time.sleep(0.2)


# --- data ---------------------------------------------------------------------------------------
def make_facts(host: Host, **fields) -> HostFacts:
    defaults = {
        "collected_at": timezone.now(),
        "os": "debian",
        "os_version": "12",
        "arch": "x86_64",
        "kernel": "6.1.0",
        "cpu_model": "Intel Xeon Gold",
        "cpu_threads": 8,
        "memory_bytes": 16 * 2**30,
        "disk_free_pct": 50.0,
    }
    return HostFacts.objects.create(host=host, **{**defaults, **fields})


def make_group(name: str, *hosts: Host) -> HostGroup:
    group = HostGroup.objects.create(name=name)
    group.hosts.add(*hosts)
    return group


def make_job(*ips: str, state: str = "ok", command: str = "uptime", **fields) -> Job:
    """A finished job as the central worker would have stored it, TaskResults included."""
    job = Job.objects.create(command=command, timeout=30, reach_timeout=30, **fields)
    now = timezone.now()
    for ip in ips:
        task = HostTask.objects.create(
            job=job,
            host=Host.objects.filter(ip=ip).first(),
            ip=ip,
            task_id=str(uuid.uuid4()),
            state=state,
            exit_code=0 if state == State.OK else None,
            duration=0.25,
            stdout_head=f"out of {ip}\n",
            stdout_bytes=len(f"out of {ip}\n"),
            started_at=now - timedelta(seconds=1),
            finished_at=now,
        )
        if state != State.PENDING:
            TaskResult.objects.create(task_id=task.task_id, status="SUCCESS")
    return job


def make_change(host: Host, **fields) -> Change:
    defaults = {"action": "discovered", "kind": "", "key": "", "time": timezone.now()}
    return Change.objects.create(host=host, **{**defaults, **fields})


def make_asset(host: Host, kind: str = "disk", key: str = "sda", **data) -> Asset:
    return Asset.objects.create(host=host, kind=kind, key=key, data=data or {"size": 1})
