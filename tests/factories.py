"""Model factories for tests."""

from cmdb.hosts.choices import AgentStatusChoices
from cmdb.hosts.models import Host


def make_host(ip: str, hostname: str = "", with_agent: bool = True) -> Host:
    # update_or_create: a real agent may have registered the host already.
    host, _ = Host.objects.update_or_create(
        ip=ip,
        defaults={
            "hostname": hostname,
            "agent_name": f"agent@{ip}" if with_agent else "",
            "agent_status": (
                AgentStatusChoices.ONLINE if with_agent else AgentStatusChoices.UNKNOWN
            ),
        },
    )
    return host
