"""API test helpers: users with exactly the permissions a test gives, token clients, data."""

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

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
from tests.support.factories import make_host

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


def without_host(doc):
    """Links as paths: the API's are absolute (its request), the command line's are not."""
    if isinstance(doc, dict):
        return {k: without_host(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [without_host(v) for v in doc]
    if isinstance(doc, str) and doc.startswith("http://testserver/"):
        return doc.removeprefix("http://testserver")
    return doc


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


def make_fetched(task: HostTask, fetch_dir: Path, content: bytes, name: str = "app.log"):
    """``task``'s fetched file kept on the server, as the central worker stores it: under
    ``fetch_dir``/<job id>/<ip>/, with its sha256 and size."""
    copy = Path(fetch_dir) / str(task.job_id) / task.ip / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(content)
    task.fetched = {"path": str(copy), "sha256": hashlib.sha256(content).hexdigest(),
                    "size": len(content)}  # fmt: skip
    task.save(update_fields=["fetched"])
    return task


@dataclass
class WebAndDb:
    """Two host groups and what each host has: hosts web1, web2 (group web) and db1 (db),
    their facts, an asset and a change each; a command job on all three, one on db1 alone, a
    fetch job on web1 and db1 with each copy kept; and a user with every view permission
    and a view grant on web only."""

    web1: Host
    web2: Host
    db1: Host
    spanning: Job
    db_only: Job
    fetch: Job
    viewer: User

    def task(self, job: Job, host: Host) -> HostTask:
        return job.host_tasks.get(host=host)


#: Beyond VIEW_ALL, what the admin's pages of facts, reports and results take.
ADMIN_VIEW = ["assets.view_hostfacts", "assets.view_factreport",
              "django_celery_results.view_taskresult"]  # fmt: skip


def web_and_db(fetch_dir: Path, web=("127.16.0.1", "127.16.0.2"), db="127.16.1.1") -> WebAndDb:
    web1, web2 = (make_host(ip, hostname=f"web-{i}") for i, ip in enumerate(web, 1))
    db1 = make_host(db, hostname="db-1")
    make_group("web", web1, web2)
    make_group("db", db1)
    for host, os_id, free in ((web1, "debian", 40.0), (web2, "debian", 30.0), (db1, "rocky", 3.0)):
        make_facts(host, os=os_id, os_version="9" if os_id == "rocky" else "12",
                   disk_free_pct=free)  # fmt: skip
        make_asset(host, "disk", f"disk-of-{host.hostname}")
        make_change(host, kind="disk", key=f"disk-of-{host.hostname}")
    spanning = make_job(web1.ip, web2.ip, db1.ip, command="echo spanning")
    db_only = make_job(db1.ip, command="echo db only")
    fetch = make_job(web1.ip, db1.ip, kind="fetch", command="fetch",
                     params={"agent": {"path": "/var/log/app.log"}})  # fmt: skip
    for task in fetch.host_tasks.all():
        make_fetched(task, fetch_dir, f"log of {task.ip}\n".encode())
    viewer = make_user(*VIEW_ALL, *ADMIN_VIEW, username="webviewer", everywhere=False)
    grant = Grant.objects.create(actions=[Action.VIEW])
    grant.users.add(viewer)
    grant.host_groups.add(HostGroup.objects.get(name="web"))
    return WebAndDb(web1, web2, db1, spanning, db_only, fetch, viewer)
