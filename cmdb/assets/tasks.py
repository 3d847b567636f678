"""Tasks run by the central worker for facts."""

from celery import shared_task

from cmdb.hosts.choices import AgentStatusChoices
from cmdb.hosts.models import Host
from cmdb.jobs import services


@shared_task(name="cmdb.assets.collect_all", ignore_result=True)
def collect_all() -> str | None:
    """Periodic (django-celery-beat): collect facts from every host whose agent is online."""
    # Only hosts that may receive anything: one pending host must not refuse the whole fleet's.
    online = Host.objects.accepted().filter(agent_status=AgentStatusChoices.ONLINE)
    ips = list(online.values_list("ip", flat=True))
    if not ips:
        return None
    job = services.collect(services.Targets(hosts=ips), requested_by="schedule")
    return str(job.id)
