"""Host model."""

import ipaddress

from django.db import models
from django.utils import timezone

from cmdb.hosts.choices import AgentStatusChoices, KeyStateChoices, ModeChoices
from cmdb.hosts.fields import IPKeyField

E_MALFORMED = "malformed IP address: {target!r}"
E_UNKNOWN_IP = "unknown host {target} (not in the inventory: add it with `manage.py hosts add`)"
E_UNKNOWN_NAME = "unknown host {target!r} (no host has that IP or hostname)"
E_AMBIGUOUS = "hostname {target!r} matches {count} hosts ({ips}): name them by IP"


class TargetError(ValueError):
    """One or more targets could not be resolved; ``problems`` names each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _looks_like_ip(target: str) -> bool:
    # "10.0.3", "10.0.3.300" and "1.2.3.4.5" are typos of an IP, not hostnames: say malformed.
    return bool(target) and all(c.isdigit() or c == "." for c in target)


class HostQuerySet(models.QuerySet):
    def resolve(self, targets: list[str]) -> list["Host"]:
        """Return the hosts named by IP or hostname, in order, without duplicates.

        Every target is checked before anything is returned, so a typo in the tenth target
        stops the whole job rather than leaving it half-dispatched.
        """
        problems: dict[int, str] = {}
        wanted = []
        for index, raw in enumerate(targets):
            target = raw.strip()
            if _looks_like_ip(target):
                try:
                    wanted.append((index, "ip", str(ipaddress.IPv4Address(target)), raw))
                except ValueError:
                    problems[index] = E_MALFORMED.format(target=raw)
            elif target:
                wanted.append((index, "hostname", target, raw))
            else:
                problems[index] = E_MALFORMED.format(target=raw)
        by_ip = {h.ip: h for h in self.filter(ip__in=[v for _, k, v, _ in wanted if k == "ip"])}
        by_name: dict[str, list[Host]] = {}
        names = [v for _, k, v, _ in wanted if k == "hostname"]
        for host in self.filter(hostname__in=names).order_by("ip"):
            by_name.setdefault(host.hostname, []).append(host)
        hosts: dict[int, Host] = {}
        for index, kind, value, raw in wanted:
            if kind == "ip":
                matches = [by_ip[value]] if value in by_ip else []
                unknown = E_UNKNOWN_IP.format(target=value)
            else:
                matches = by_name.get(value, [])
                unknown = E_UNKNOWN_NAME.format(target=raw)
            if len(matches) == 1:
                hosts.setdefault(matches[0].pk, matches[0])
            elif not matches:
                problems[index] = unknown
            else:
                ips = ", ".join(h.ip for h in matches)
                problems[index] = E_AMBIGUOUS.format(target=raw, count=len(matches), ips=ips)
        if problems:
            raise TargetError([problems[i] for i in sorted(problems)])
        return list(hosts.values())

    def accepted(self):
        """Hosts whose agent key an operator (or CMDB_AUTO_ACCEPT) accepted: the only ones that
        receive anything."""
        return self.filter(key_state=KeyStateChoices.ACCEPTED)

    def speaking(self):
        """Hosts whose accepted key is believed: the accepted ones, and those pending only
        because another key (a candidate) turned up: until an operator decides, what the host
        ran under its accepted key still counts."""
        changed = models.Q(key_state=KeyStateChoices.PENDING, candidate_key__gt="")
        return self.filter(models.Q(key_state=KeyStateChoices.ACCEPTED) | changed)


class Host(models.Model):
    ip = models.GenericIPAddressField(
        "IP address",
        protocol="IPv4",
        unique=True,
        help_text="The address the agent serves; also the name of its Celery queue.",
    )
    ip_key = IPKeyField("IP address as a number", help_text="What hosts are listed in order by.")
    hostname = models.CharField("hostname", max_length=255, blank=True, db_index=True)
    agent_status = models.CharField(
        "agent status",
        max_length=16,
        choices=AgentStatusChoices.choices,
        default=AgentStatusChoices.UNKNOWN,
    )
    agent_name = models.CharField(
        "agent", max_length=255, blank=True, help_text="Celery node name of the host's agent."
    )
    agent_pid = models.PositiveIntegerField("agent pid", null=True, blank=True)
    agent_key = models.TextField(
        "agent key", blank=True, help_text="The public key (PEM) the host's agent registered with."
    )
    key_state = models.CharField(
        "key", max_length=16, choices=KeyStateChoices.choices, default=KeyStateChoices.NONE,
        db_index=True, help_text="Only a host whose key is accepted receives anything.",
    )  # fmt: skip
    key_fingerprint = models.CharField("key fingerprint", max_length=64, blank=True)
    agent_started = models.FloatField(
        "agent started", null=True, blank=True,
        help_text="When (its own clock) the agent of its last registration started: an older "
        "registration is a replay.",
    )  # fmt: skip
    key_changed_at = models.DateTimeField(
        "key changed", null=True, blank=True,
        help_text="When its agent came back with another key (pending again since).",
    )  # fmt: skip
    candidate_key = models.TextField(
        "candidate key", blank=True,
        help_text="Another key an agent registered for this host after its key was accepted: "
        "the accepted one stays until an operator accepts (or rejects) this one.",
    )  # fmt: skip
    candidate_fingerprint = models.CharField("candidate key fingerprint", max_length=64,
                                             blank=True)  # fmt: skip
    last_seen = models.DateTimeField(
        "last seen", null=True, blank=True, help_text="Last registration or heartbeat."
    )
    created = models.DateTimeField("created", default=timezone.now, editable=False)
    mode = models.CharField(
        "mode", max_length=8, choices=ModeChoices.choices, default=ModeChoices.AGENT,
        db_index=True, help_text="How it is reached: its agent, or the SSH gateway.",
    )  # fmt: skip
    ssh_user = models.CharField("SSH user", max_length=64, blank=True)
    ssh_port = models.PositiveIntegerField("SSH port", default=22)
    ssh_host_key = models.TextField(
        "SSH host key", blank=True,
        help_text="The host's public key as `hosts trust` recorded it (OpenSSH format): the "
        "gateway connects only to a host presenting exactly this key.",
    )  # fmt: skip

    salt_minion = models.CharField(
        "salt minion", max_length=255, blank=True,
        help_text="salt-mode hosts: the minion id the salt gateway targets on the Salt master.",
    )  # fmt: skip

    objects = HostQuerySet.as_manager()

    class Meta:
        ordering = ["ip_key"]
        verbose_name = "host"
        # Who may move an IP moves every command sent to that host (the queue is the IP):
        # apart from editing a host's name or description.
        permissions = [("manage_keys", "Can accept, reject and delete agents' keys"),
                       ("change_host_ip", "Can change a host's IP address")]  # fmt: skip

    def __str__(self):
        return f"{self.ip} ({self.hostname})" if self.hostname else self.ip


class HostGroup(models.Model):
    """A named set of hosts to target together (``--group web``)."""

    name = models.SlugField("name", max_length=64, unique=True)
    description = models.CharField("description", max_length=255, blank=True)
    hosts = models.ManyToManyField(Host, related_name="groups", blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "host group"
        # Grants are by group: who may change its members changes who may act on them.
        permissions = [("change_hostgroup_members", "Can change which hosts are in a group")]

    def __str__(self):
        return self.name
