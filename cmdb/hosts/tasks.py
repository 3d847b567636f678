"""Tasks run by the central worker for hosts."""

import logging

from celery import shared_task
from django.conf import settings

from cmdb.hosts.models import Host
from cmdb.jobs import services
from wire import names
from wire.messages import Registration, WireError

logger = logging.getLogger(__name__)


@shared_task(name=names.REGISTER_AGENT, ignore_result=True)
def register_agent(info: dict) -> None:
    """An agent started and announced the IP queue it consumes."""
    try:
        registration = Registration.from_wire(info)
    except WireError as exc:
        logger.error("registration refused: %s", exc)
        return
    host = Host.objects.register_agent(registration.to_wire(),
                                       create=settings.CMDB["AUTO_REGISTER"])  # fmt: skip
    if host is None:
        logger.warning("agent %s on unknown host %s refused (CMDB_AUTO_REGISTER is off)",
                       registration.agent, registration.ip)  # fmt: skip
        return
    if settings.CMDB["COLLECT_ON_START"]:
        # A new or restarted agent: the CMDB learns what the host is (or became) at once.
        services.collect(services.Targets(hosts=[host.ip]),
                         requested_by=f"agent start ({registration.agent})")  # fmt: skip
