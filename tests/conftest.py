"""Shared fixtures: a real Redis, a file-backed test database, a central worker and agents.

Nothing is mocked: the broker is a redis-server started here on a free loopback port, and the
central worker and agents are the same processes `make up` starts (deploy.local.Fleet).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from deploy.local import Fleet
from tests.support.blobs import standalone_redis
from tests.support.fleet import (
    AGENT_IPS,
    AUTO_ACCEPTED,
    ROOT,
    free_port,
    ping_nodes,
    remember_keys,
    startup_collections_done,
    wait_for,
)

#: The superuser the suite's CLI runs act as: the tests of identity itself name others.
CLI_USER = "cli-tester"

# Short deadlines so that unreachable and lost tasks end within seconds in tests.
TEST_ENV = {
    "CMDB_SWEEP_INTERVAL": "0.5",
    "CMDB_AGENT_LOST_AFTER": "6",
    "CMDB_RESULT_GRACE": "10",
    "CMDB_LOGLEVEL": "INFO",
    "CMDB_BLOB_RELEASE_AFTER": "1",
    # Signed heartbeats several times within CMDB_AGENT_LOST_AFTER.
    "CMDB_AGENT_HEARTBEAT": "1",
    # The suite's own agents are accepted as they come; the enrollment tests use others.
    "CMDB_AUTO_ACCEPT": AUTO_ACCEPTED,
    # Who the CLI acts as (the `cli_user` fixture makes them in each test's database).
    "CMDB_USER": CLI_USER,
}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory):
    # The central worker and the CLI run in other processes: an in-memory test database
    # would be invisible to them, so SQLite tests use a file.
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory) -> Path:
    """The server's signing key for the whole suite (not the checkout's .run/signing_key).

    Set for this process (in-process dispatch signs with it) and, through process_env, for
    every process started after: the central worker and manage.py sign with it, agents get
    its public key.
    """
    from django.conf import settings

    from wire import signing

    path = tmp_path_factory.mktemp("keys") / "signing_key"
    signing.generate_key_pair(path)
    os.environ["CMDB_SIGNING_KEY"] = str(path)
    settings.CMDB.update(SIGNING_KEY=str(path), SIGNING_KEY_CREATE=False)
    return path


@pytest.fixture(scope="session")
def standalone_redis_port(tmp_path_factory):
    """A redis-server for the blob store's tests, which need no Django and no fleet."""
    with standalone_redis(tmp_path_factory.mktemp("blob-redis")) as port:
        yield port


@pytest.fixture
def store(standalone_redis_port):
    """A client of that redis-server, emptied for each test."""
    client = redis.Redis(port=standalone_redis_port)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_url(run_dir):
    """A real redis-server of the suite's own; its URL is set for every process started after."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    fleet = Fleet(run_dir / "redis", {"REDIS_URL": url})
    fleet.start_redis()
    os.environ["REDIS_URL"] = url
    from cmdb.celery import app

    # Settings were read before this fixture ran; point the server's app at this broker.
    app.conf.broker_url = url
    yield url
    fleet.stop_all()


def database_url() -> str:
    """The test database (Django's ``test_...``, made by now) as a URL for the subprocesses."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    # Quoted: the host may be a unix socket's folder (tests/support/postgres.py), a password
    # anything at all.
    login = quote(s["USER"], safe="") + (f":{quote(s['PASSWORD'], safe='')}" if s["PASSWORD"]
                                          else "")  # fmt: skip
    host = quote(s["HOST"], safe="") + (f":{s['PORT']}" if s["PORT"] else "")
    return f"postgres://{login}@{host}/{quote(s['NAME'], safe='')}"


@pytest.fixture(scope="session")
def process_env(run_dir, redis_url, django_db_setup, django_db_blocker, signing_key) -> dict:
    """Environment for every subprocess: the suite's broker, test database and signing keys."""
    from django.conf import settings

    from wire import signing

    with django_db_blocker.unblock():
        url = database_url()
    # The central worker writes fetched files where the API (this process) serves them from.
    settings.CMDB["FETCH_DIR"] = run_dir / "fetched"
    settings.CMDB["OUTPUT_DIR"] = run_dir / "output"  # kept outputs (--keep-output), likewise
    return {
        **TEST_ENV,
        "REDIS_URL": redis_url,
        "DATABASE_URL": url,
        "CMDB_FETCH_DIR": str(settings.CMDB["FETCH_DIR"]),
        "CMDB_OUTPUT_DIR": str(settings.CMDB["OUTPUT_DIR"]),
        "CMDB_SIGNING_KEY": str(signing_key),
        "CMDB_AGENT_PUBKEY": str(signing.public_path(signing_key)),
    }


@pytest.fixture(scope="session")
def fleet(run_dir, process_env, django_db_blocker):
    """The central worker and one agent per AGENT_IPS, up for the whole session."""
    from cmdb.celery import app

    fleet = Fleet(run_dir / "fleet", process_env)
    fleet.start_central(name="central")
    for ip in AGENT_IPS:
        fleet.start_agent(ip)
    nodes = [f"central@{socket.gethostname()}", *(f"agent@{ip}" for ip in AGENT_IPS)]
    wait_for(lambda: ping_nodes(app, nodes), 90, f"{nodes} to answer pings", interval=0.5)
    with django_db_blocker.unblock():
        # Agents announce themselves and the server collects their facts: let that settle,
        # then start the tests from an empty inventory.
        wait_for(lambda: startup_collections_done(len(AGENT_IPS)), 90, "startup collections")
        remember_keys(fleet, AGENT_IPS)
        from cmdb.hosts.models import Host
        from cmdb.jobs.models import Job

        Job.objects.all().delete()
        Host.objects.all().delete()
    yield fleet
    fleet.stop_all()


@pytest.fixture
def cli_user(monkeypatch):
    """The superuser the CLI acts as (CMDB_USER), in this test's database (flushed between
    tests); in-process call_command acts as them too."""
    from django.conf import settings
    from django.contrib.auth.models import User

    monkeypatch.setitem(settings.CMDB, "CLI_USER", CLI_USER)
    found = User.objects.filter(username=CLI_USER).first()
    return found or User.objects.create_superuser(CLI_USER, f"{CLI_USER}@example.com", None)


@pytest.fixture
def manage(process_env, cli_user):
    """Run `python manage.py ...` as a real process against the suite's broker and database,
    as ``cli_user`` unless the test says otherwise (env CMDB_USER, --as)."""

    def run(*args: str, env: dict | None = None, timeout: float = 120):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env={**os.environ, **process_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        proc.elapsed = time.monotonic() - started
        return proc

    return run


@pytest.fixture
def login_counts(redis_url):
    """The broker's Redis, where failed logins are counted, without earlier tests' counts."""
    from cmdb.access import attempts

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{attempts.PREFIX}*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(f"{attempts.PREFIX}*"):
        client.delete(key)
    client.close()
