"""Pushed files' blobs in the broker's Redis: kept while their push runs, released after."""

from django.utils import timezone

from cmdb.jobs.broker import redis_client
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.models import Job
from wire import blobs


def release_finished_pushes(app, quiet: int) -> int:
    """Delete the blobs of push jobs that have ended: Redis is a broker, not a file store.

    A blob shared with a push still running (same content) is kept for that one, which
    releases it when it ends. Returns how many blobs were deleted.
    """
    unreleased = Job.objects.filter(kind=JobKindChoices.PUSH, blob_released_at__isnull=True)
    running = set(
        unreleased.filter(host_tasks__state__in=State.active()).values_list("pk", flat=True)
    )
    manifests = {j.pk: j.params.get("agent", {}).get("manifest") for j in unreleased}
    busy = {m["sha256"]: m for pk, m in manifests.items() if m and pk in running}
    if busy:
        # A long batched push must not outlive its chunks: keep them while it runs.
        with redis_client(app) as client:
            for manifest in busy.values():
                blobs.keep_blob(client, manifest)
    released = 0
    for job in unreleased.exclude(pk__in=running):
        manifest = job.params.get("agent", {}).get("manifest")
        if manifest and manifest["sha256"] not in busy:
            with redis_client(app) as client:
                # A push being prepared now reuses (and refreshes) the same blob before its
                # job exists: leave blobs touched within the last `quiet` seconds alone.
                if not blobs.release_blob(client, manifest, quiet):
                    continue
            released += 1
        Job.objects.filter(pk=job.pk).update(blob_released_at=timezone.now())
    return released
