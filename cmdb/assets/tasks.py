"""Tasks run by the central worker for facts."""

from celery import shared_task

from cmdb.celery import app
from cmdb.hosts.choices import AgentStatusChoices
from cmdb.hosts.models import Host
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.dispatch import CommandRequest, dispatch_command


@shared_task(name="cmdb.assets.collect_all", ignore_result=True)
def collect_all() -> str | None:
    """Periodic (django-celery-beat): collect facts from every host whose agent is online."""
    online = Host.objects.filter(agent_status=AgentStatusChoices.ONLINE)
    ips = list(online.values_list("ip", flat=True))
    if not ips:
        return None
    job = dispatch_command(
        CommandRequest(kind=JobKindChoices.COLLECT, targets=ips, requested_by="schedule"), app
    )
    return str(job.id)
