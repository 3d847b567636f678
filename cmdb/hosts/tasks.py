"""Tasks run by the central worker for hosts."""

import logging

from celery import shared_task
from django.conf import settings

from cmdb.hosts import keys
from cmdb.hosts.choices import KeyStateChoices
from cmdb.jobs import services
from wire import names
from wire.messages import Registration, WireError

logger = logging.getLogger(__name__)

E_PENDING = ("agent %s on %s registered with key %s, pending: it receives nothing until "
             "`manage.py keys accept %s`")  # fmt: skip


@shared_task(name=names.REGISTER_AGENT, ignore_result=True)
def register_agent(info: dict) -> None:
    """An agent started and announced the IP queue it consumes, with its key (cmdb.hosts.keys)."""
    try:
        registration = Registration.from_wire(info)
    except WireError as exc:
        logger.error("registration refused: %s", exc)
        return
    host, outcome = keys.register(registration)
    if host is None:
        logger.warning("agent %s on %s refused (%s)", registration.agent, registration.ip,
                       outcome)  # fmt: skip
        return
    if host.key_state == KeyStateChoices.PENDING:
        logger.warning(E_PENDING, registration.agent, host.ip, host.key_fingerprint, host.ip)
    elif (host.key_state == KeyStateChoices.ACCEPTED and outcome in ("new key", "restarted")
          and settings.CMDB["COLLECT_ON_START"]):  # fmt: skip
        # Not for a registration seen already (a replay): each would be a job the server signs.
        # A new or restarted agent: the CMDB learns what the host is (or became) at once.
        services.collect(services.Targets(hosts=[host.ip]),
                         requested_by=f"agent start ({registration.agent})")  # fmt: skip
