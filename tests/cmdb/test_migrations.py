"""Migrations that move data keep it (the states here are the database's words at the time,
not the choices class of today): jobs 0006 turns JSON keys and a stdout prefix into the
columns and the state they stand for, and back."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("jobs", "0005_hosttask_fetched")
AFTER = ("jobs", "0006_storing_state_and_release_columns")
REMOVED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def migrate_to_latest():
    """Every app back to its newest migration: the database is the whole suite's."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_released_removed_and_storing_become_columns_and_a_state_and_back():
    old = migrate(BEFORE)
    Job, HostTask = old.get_model("jobs", "Job"), old.get_model("jobs", "HostTask")
    push = Job.objects.create(kind="push", command="push", timeout=1, reach_timeout=1,
                              params={"agent": {"dest": "/x"}, "released": True})  # fmt: skip
    fetch = Job.objects.create(kind="fetch", command="fetch", timeout=1, reach_timeout=1)
    removed = HostTask.objects.create(
        job=fetch, ip="127.0.1.1", task_id=str(uuid.uuid4()), state="ok",
        fetched={"path": "/f", "sha256": "0" * 64, "size": 1, "removed": REMOVED.isoformat()},
    )  # fmt: skip
    storing = HostTask.objects.create(job=fetch, ip="127.0.1.2", task_id=str(uuid.uuid4()),
                                      state="running", stdout_head="received 4 bytes")  # fmt: skip
    running = HostTask.objects.create(job=fetch, ip="127.0.1.3", task_id=str(uuid.uuid4()),
                                      state="running")  # fmt: skip
    try:
        new = migrate(AFTER)
        Job, HostTask = new.get_model("jobs", "Job"), new.get_model("jobs", "HostTask")
        push = Job.objects.get(pk=push.pk)
        assert push.blob_released_at is not None and "released" not in push.params
        removed = HostTask.objects.get(pk=removed.pk)
        assert removed.fetched_removed_at == REMOVED and "removed" not in removed.fetched
        assert HostTask.objects.get(pk=storing.pk).state == "storing"
        assert HostTask.objects.get(pk=running.pk).state == "running"

        old = migrate(BEFORE)
        Job, HostTask = old.get_model("jobs", "Job"), old.get_model("jobs", "HostTask")
        assert Job.objects.get(pk=push.pk).params["released"] is True
        assert HostTask.objects.get(pk=removed.pk).fetched["removed"] == REMOVED.isoformat()
        assert HostTask.objects.get(pk=storing.pk).state == "running"
    finally:
        migrate_to_latest()
