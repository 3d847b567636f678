"""`manage.py broker_acl [--server] [IP... | --all]`: Redis (>= 7) ACL users for the broker, one per
host's agent, limited to what that agent needs (wire.transport.agent_acl_rules); deploy/BROKER.md.

The aclfile lines go to stdout; each user's new password, inside the broker URL to give it, goes
to stderr, once: Redis keeps only its sha256.
"""

import ipaddress
import secrets
from urllib.parse import quote, urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import CommandError

from cmdb.hosts.models import Host
from cmdb.jobs.cli import EXIT_INVALID, FleetCommand
from wire import transport

#: The server's broker user (the central worker, beat, the web, manage.py).
SERVER_USER = "cmdb-server"

E_NOTHING = "name hosts by IP, or --all (every accepted host), or --server"
E_NOT_IP = "not an IPv4 address: {ip!r} (agents' queues are their hosts' IPs)"
E_BAD_BROKER = ("--broker must be a redis:// or rediss:// URL with a host, or sentinel:// ones "
                "separated by \";\": {url}")  # fmt: skip

URL_NOTE = ("# {who}: its broker URL, with a password shown only now (Redis keeps its sha256)."
            " Put it in {where}, readable by root only:")  # fmt: skip
AGENT_WHERE = ("the host's /etc/cmdb-agent/env (its agent must run with "
               "CMDB_AGENT_REMOTE_CONTROL=0, as the unit does)")  # fmt: skip


def broker_address(url: str) -> str:
    """``url`` without user or password: what the printed URLs are built on. A Sentinel broker
    is several URLs separated by ";" (kombu's form), each stripped the same way."""
    parts = [urlsplit(part) for part in url.split(";")]
    sentinel = parts[0].scheme == "sentinel"
    schemes = {"sentinel"} if sentinel else {"redis", "rediss"}
    if any(p.scheme not in schemes or not p.hostname for p in parts) or (
        len(parts) > 1 and not sentinel
    ):
        raise CommandError(E_BAD_BROKER.format(url=transport.redacted(url)),
                           returncode=EXIT_INVALID)  # fmt: skip
    return ";".join(
        urlunsplit((p.scheme, p.hostname if p.port is None else f"{p.hostname}:{p.port}",
                    p.path or "/0", p.query, ""))
        for p in parts
    )  # fmt: skip


def with_credentials(address: str, user: str, password: str) -> str:
    """``address`` with ``user`` and ``password`` in its first URL: kombu takes a Sentinel
    broker's credentials for the master from there (the sentinels get none)."""
    first, sep, rest = address.partition(";")
    parts = urlsplit(first)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")) + sep + rest


def database(address: str) -> int:
    path = urlsplit(address.partition(";")[0]).path.strip("/")
    return int(path) if path.isdigit() else 0


class Command(FleetCommand):
    needs_user = False
    help = (
        "Redis ACL users for the broker: one per host's agent, allowed only what that agent "
        "needs, and with --server the server's own (and the default user switched off). "
        "Prints aclfile lines on stdout and each new password, in its broker URL, on stderr."
    )

    def add_arguments(self, parser):
        parser.add_argument("ips", nargs="*", metavar="IP", help="hosts whose agent gets a user")
        parser.add_argument("--all", action="store_true", help="every host whose key is accepted")
        parser.add_argument(
            "--server",
            action="store_true",
            help=f"also the server's user ({SERVER_USER}, everything) and `user default` off: "
            "the first lines of a new aclfile",
        )
        parser.add_argument(
            "--broker",
            metavar="URL",
            default=None,
            help="the broker as the agents reach it, e.g. 'rediss://broker.example:6380/0?"
            "ssl_cert_reqs=required&ssl_ca_certs=/etc/cmdb-agent/broker-ca.pem' "
            "(default: this server's REDIS_URL, without its credentials)",
        )
        parser.add_argument(
            "--setuser",
            action="store_true",
            help="print `ACL SETUSER ...` commands for redis-cli instead of aclfile lines",
        )

    def handle(self, *args, **opts):
        ips = list(opts["ips"])
        if opts["all"]:
            ips += list(Host.objects.accepted().order_by("ip").values_list("ip", flat=True))
        if not ips and not opts["server"]:
            raise CommandError(E_NOTHING, returncode=EXIT_INVALID)
        for ip in ips:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise CommandError(E_NOT_IP.format(ip=ip), returncode=EXIT_INVALID) from None
        address = broker_address(opts["broker"] or settings.BROKER_URL)
        db, cmdb = database(address), settings.CMDB
        users = []
        if opts["server"]:
            users.append((SERVER_USER, transport.SERVER_ACL_RULES, "the server", "its REDIS_URL"))
        for ip in dict.fromkeys(ips):
            rules = transport.agent_acl_rules(ip, cmdb["CENTRAL_QUEUE"], cmdb["RESULTS_QUEUE"], db)
            users.append((transport.agent_username(ip), rules, f"host {ip}", AGENT_WHERE))
        if opts["server"]:
            # Without this line Redis keeps its default user: no password, every right.
            self._print(["user", "default", "reset"], opts["setuser"])
        for name, rules, who, where in users:
            password = secrets.token_urlsafe(32)
            self._print(transport.acl_user(name, password, rules), opts["setuser"])
            self.stderr.write(URL_NOTE.format(who=who, where=where), style_func=str)
            self.stderr.write(f"REDIS_URL={with_credentials(address, name, password)}",
                              style_func=str)  # fmt: skip

    def _print(self, words: list[str], setuser: bool) -> None:
        # `user NAME rules...` in an aclfile; `ACL SETUSER NAME rules...` for redis-cli.
        self.stdout.write(" ".join(["ACL", "SETUSER", *words[1:]] if setuser else words))
