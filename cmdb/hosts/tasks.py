"""Tasks run by the central worker for hosts."""

import logging

from celery import shared_task
from django.conf import settings

from cmdb.hosts.models import Host
from workers import config

logger = logging.getLogger(__name__)


@shared_task(name=config.REGISTER_AGENT, ignore_result=True)
def register_agent(info: dict) -> None:
    """An agent started and announced the IP queue it consumes."""
    host = Host.objects.register_agent(info, create=settings.CMDB["AUTO_REGISTER"])
    if host is None:
        logger.warning(
            "agent %s on unknown host %s refused (CMDB_AUTO_REGISTER is off)",
            info.get("agent"),
            info.get("ip"),
        )
        return
    if settings.CMDB["COLLECT_ON_START"]:
        # A new or restarted agent: the CMDB learns what the host is (or became) at once.
        from cmdb.celery import app
        from cmdb.jobs.choices import JobKindChoices
        from cmdb.jobs.dispatch import CommandRequest, dispatch_command

        dispatch_command(
            CommandRequest(
                kind=JobKindChoices.COLLECT,
                targets=[host.ip],
                requested_by=f"agent start ({info.get('agent')})",
            ),
            app,
        )
