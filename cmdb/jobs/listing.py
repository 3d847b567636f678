"""Reading jobs back at scale: recent jobs with their tally, and the targets of a job that
cannot answer now (offline, or never seen), which dispatching front-ends warn about."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from cmdb.access import visible
from cmdb.hosts.choices import AgentStatusChoices
from cmdb.hosts.models import Host
from cmdb.jobs.models import HostTask, Job

E_SINCE = "since must be an age (30m, 6h, 2d) or a date (2026-12-01, 2026-12-01T09:00), not {v!r}"
_AGE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since(value: str, now: datetime | None = None) -> datetime:
    """``value`` as a moment: an age back from now ("30m", "6h", "2d") or an ISO date."""
    text = value.strip()
    if match := _AGE.fullmatch(text):
        return (now or timezone.now()) - timedelta(**{_UNIT[match[2]]: int(match[1])})
    moment = parse_datetime(text) or parse_datetime(text + "T00:00")
    if moment is None:
        raise ValueError(E_SINCE.format(v=value))
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, UTC)


@dataclass(frozen=True)
class Recent:
    job: Job
    counts: dict[str, int]
    hidden: int


def recent(user, states=(), requested_by: str | None = None, after: datetime | None = None,
           limit: int = 20) -> list[Recent]:  # fmt: skip
    """The latest jobs ``user`` may view, newest first, each with its host tasks per state
    (of those they may view). ``states``: only jobs with a host task in one of them."""
    jobs = visible.viewable_jobs(user).order_by("-created")
    if requested_by:
        jobs = jobs.filter(requested_by=requested_by)
    if after is not None:
        jobs = jobs.filter(created__gte=after)
    if states:
        shown = visible.viewable_tasks(user, HostTask.objects.filter(state__in=list(states)))
        jobs = jobs.filter(pk__in=shown.values("job_id"))
    jobs = list(jobs[:limit])
    counts = visible.task_counts(user, jobs)
    return [Recent(j, counts.get(j.pk, {}), j.hidden_hosts) for j in jobs]


@dataclass(frozen=True)
class NotAnswering:
    """A job's targets that will not answer before their reach timeout, by why."""

    offline: list[str]
    never_seen: list[str]

    def __bool__(self):
        return bool(self.offline or self.never_seen)


def not_answering_document(job: Job) -> dict:
    """As the API's dispatch answer has it, and client.report.not_answering_lines reads it."""
    late = not_answering(job)
    return {"skipped": list(job.params.get("skipped_offline") or []), "offline": late.offline,
            "never_seen": late.never_seen}  # fmt: skip


def not_answering(job: Job) -> NotAnswering:
    hosts = Host.objects.filter(pk__in=HostTask.objects.filter(job=job).values("host_id"))
    rows = hosts.exclude(agent_status=AgentStatusChoices.ONLINE).order_by("ip_key")
    offline, never = [], []
    for ip, seen in rows.values_list("ip", "last_seen"):
        (never if seen is None else offline).append(ip)
    return NotAnswering(offline, never)
