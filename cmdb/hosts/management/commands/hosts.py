"""`manage.py hosts [list|add|remove|trust|mode|salt-minions]`: the inventory of managed hosts."""

import ipaddress

from django.core.management.base import CommandError
from django.db import IntegrityError

from cmdb import audit
from cmdb.access import grants
from cmdb.access.models import Action
from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.context import current_actor
from cmdb.hosts import keys, ssh
from cmdb.hosts.choices import KeyStateChoices, ModeChoices
from cmdb.hosts.models import Host
from cmdb.jobs.cli import FleetCommand
from cmdb.jobs.report import printable
from wire.names import MINION_ID

E_KNOWN = (
    "already known: {ips}; nothing added. Changing a host's mode replaces its key: "
    "`hosts mode {first} --mode ssh --ssh-user USER` (needs hosts.manage_keys and a "
    "keys grant)"
)


class Command(FleetCommand):
    help = "List, add or remove managed hosts."
    refused = "nothing changed"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action")
        sub.add_parser("list", help="list hosts (the default)")
        add = sub.add_parser("add", help="add hosts by IP")
        add.add_argument("ips", nargs="+")
        add.add_argument("--hostname", default="", help="hostname (with a single IP)")
        add.add_argument(
            "--mode",
            choices=[ModeChoices.AGENT, ModeChoices.SSH, ModeChoices.SALT],
            default=ModeChoices.AGENT,
            help="how it is reached: its agent (the default), SSH (the gateway) or Salt (the "
            "salt gateway, through an existing master's salt-api)",
        )
        add.add_argument("--minion", default="", help="--mode salt: the host's minion id")
        add.add_argument("--ssh-user", default="", help="the user the gateway logs in as")
        add.add_argument("--ssh-port", type=int, default=22)
        sub.add_parser("salt-minions", help="print the salt-mode hosts: IP=minion,...")
        trust = sub.add_parser("trust", help="record ssh-mode hosts' keys (shows fingerprints)")
        trust.add_argument("ips", nargs="+")
        trust.add_argument(
            "--replace",
            action="store_true",
            help="record the key a host presents now even if it changed",
        )
        mode = sub.add_parser("mode", help="change how known hosts are reached (key management)")
        mode.add_argument("ips", nargs="+")
        mode.add_argument("--mode", choices=[ModeChoices.AGENT, ModeChoices.SSH], required=True)
        mode.add_argument("--ssh-user", default="", help="the user the gateway logs in as")
        mode.add_argument("--ssh-port", type=int, default=22)
        remove = sub.add_parser("remove", help="remove hosts by IP (their job history stays)")
        remove.add_argument("ips", nargs="+")

    def handle(self, *args, **opts):
        action = (opts.get("action") or "list").replace("-", "_")
        getattr(self, f"_{action}")(opts)

    def _list(self, opts):
        hosts = list(grants.hosts_for(self.user, Action.VIEW))
        if not hosts:
            self.stdout.write("no hosts yet: start an agent, or `manage.py hosts add IP`")
            return
        self.stdout.write(f"{'IP':<16} {'HOSTNAME':<24} {'MODE':<6} {'AGENT':<8} LAST SEEN")
        for h in hosts:
            seen = h.last_seen.strftime("%Y-%m-%d %H:%M:%S") if h.last_seen else "never"
            name = printable(h.hostname)  # an agent's word: no escapes to the terminal
            self.stdout.write(f"{h.ip:<16} {name:<24} {h.mode:<6} {h.agent_status:<8} {seen}")

    def _ips(self, raw: list[str]) -> list[str]:
        ips, bad = [], []
        for value in raw:
            try:
                ips.append(str(ipaddress.IPv4Address(value.strip())))
            except ValueError:
                bad.append(value)
        if bad:
            raise CommandError(f"malformed IP address: {', '.join(map(repr, bad))}", returncode=2)
        return ips

    def _add(self, opts):
        self.require("hosts.add_host", "add hosts")
        ips = self._ips(opts["ips"])
        if opts["hostname"] and len(ips) > 1:
            raise CommandError("--hostname names one host; give one IP with it", returncode=2)
        if opts["mode"] == ModeChoices.SSH:
            return self._add_ssh(ips, opts)
        if opts["mode"] == ModeChoices.SALT:
            return self._add_salt(ips, opts)
        if opts["minion"]:
            raise CommandError("--minion is for --mode salt", returncode=2)
        for ip in ips:
            try:
                _, created = Host.objects.get_or_create(
                    ip=ip, defaults={"hostname": opts["hostname"]}
                )
            except IntegrityError as exc:
                raise CommandError(f"could not add {ip}: {exc}") from None
            self.stdout.write(f"{'added' if created else 'already known'}: {ip}")

    @staticmethod
    def _gateway_key() -> dict:
        """The gateways' key as the host's, accepted: the SSH and salt gateways sign what they
        send for their hosts with it (the operator who adds the host, or changes its mode, is
        the one who decides here, not a registration)."""
        return {"agent_key": ssh.gateway_pem(), "key_state": KeyStateChoices.ACCEPTED,
                "key_fingerprint": ssh.gateway_fingerprint(), "candidate_key": "",
                "candidate_fingerprint": "", "key_changed_at": None}  # fmt: skip

    def _ssh_fields(self, opts) -> dict:
        """What makes a host ssh-mode, its key the gateway's."""
        user = opts["ssh_user"]
        if not user or not user.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise CommandError("--mode ssh needs --ssh-user USER (a plain user name)",
                               returncode=2)  # fmt: skip
        if not 0 < opts["ssh_port"] < 65536:
            raise CommandError(f"--ssh-port {opts['ssh_port']}: not a port", returncode=2)
        return {"mode": ModeChoices.SSH, "ssh_user": user, "ssh_port": opts["ssh_port"],
                **self._gateway_key()}  # fmt: skip

    def _add_ssh(self, ips: list[str], opts) -> None:
        fields = self._ssh_fields(opts)
        # Only new hosts: making a known host ssh-mode replaces its accepted key, which is key
        # management (hosts.manage_keys and a keys grant), done by `hosts mode`.
        if known := sorted(Host.objects.filter(ip__in=ips).values_list("ip", flat=True)):
            raise CommandError(E_KNOWN.format(ips=", ".join(known), first=known[0]),
                               returncode=2)  # fmt: skip
        for ip in ips:
            try:
                Host.objects.create(ip=ip, hostname=opts["hostname"], **fields)
            except IntegrityError:  # added meanwhile by someone else: theirs, not changed
                raise CommandError(E_KNOWN.format(ips=ip, first=ip), returncode=2) from None
            self.stdout.write(f"added ssh {fields['ssh_user']}@{ip}:{fields['ssh_port']} "
                              "(run hosts trust)")  # fmt: skip

    def _mode(self, opts):
        ips = self._ips(opts["ips"])
        hosts = Host.objects.filter(ip__in=ips)
        unknown = sorted(set(ips) - set(hosts.values_list("ip", flat=True)))
        if unknown:
            raise CommandError(f"unknown host(s): {', '.join(unknown)}; nothing changed",
                               returncode=2)  # fmt: skip
        keys.may_manage(current_actor(), "mode", ips)
        if opts["mode"] == ModeChoices.SSH:
            fields = self._ssh_fields(opts)
            # A host that was not ssh-mode (or was on another port) is trusted anew.
            for host in hosts:
                changed = host.mode != ModeChoices.SSH or host.ssh_port != fields["ssh_port"]
                extra = {"ssh_host_key": ""} if changed else {}
                Host.objects.filter(pk=host.pk).update(**fields, **extra)
        else:
            # Back to its agent: no key until the agent registers (pending, as a new key).
            fields = {"mode": ModeChoices.AGENT, "ssh_user": "", "ssh_host_key": "",
                      "agent_key": "", "key_fingerprint": "", "key_state": KeyStateChoices.NONE,
                      "candidate_key": "", "candidate_fingerprint": "",
                      "key_changed_at": None}  # fmt: skip
            hosts.update(**fields)
        detail = {"mode": opts["mode"]}
        if opts["mode"] == ModeChoices.SSH:
            detail.update(ssh_user=fields["ssh_user"], ssh_port=fields["ssh_port"])
        audit.record(current_actor(), "key.mode", targets_resolved=sorted(ips), detail=detail)
        for ip in ips:
            hint = " (run hosts trust)" if opts["mode"] == ModeChoices.SSH else ""
            self.stdout.write(f"{ip}: now {opts['mode']} mode{hint}")

    def _add_salt(self, ips: list[str], opts) -> None:
        minion = opts["minion"]
        if len(ips) != 1 or not minion:
            raise CommandError("--mode salt needs one IP and --minion ID (the minion's id)",
                               returncode=2)  # fmt: skip
        if not MINION_ID.fullmatch(minion):
            # A glob or list character would make the gateway's target many minions.
            raise CommandError(f"--minion {minion!r}: not a minion id (letters, digits, '.', "
                               "'-', '_'; no glob characters)", returncode=2)  # fmt: skip
        ip = ips[0]
        # Served by the salt gateway (`python -m gateway --salt`) as soon as it is recorded:
        # the gateway's key is its key, accepted, as for an ssh-mode host.
        fields = {"mode": ModeChoices.SALT, "salt_minion": minion, **self._gateway_key()}
        host, created = Host.objects.get_or_create(
            ip=ip, defaults={"hostname": opts["hostname"] or minion, **fields})  # fmt: skip
        now = (host.mode, host.salt_minion, host.agent_key, host.key_state)
        if not created and now != tuple(fields[f] for f in ("mode", "salt_minion", "agent_key",
                                                            "key_state")):  # fmt: skip
            # Who answers for a known host changes: key management, as `hosts mode` is.
            keys.may_manage(current_actor(), "mode", [ip])
            Host.objects.filter(pk=host.pk).update(**fields)
            # update() sends no signal: the change of who runs its tasks is recorded here (an
            # addition is, by the post_save signal).
            audit.record(current_actor(), AuditActionChoices.HOST_CHANGE, targets_resolved=[ip],
                         detail={"host": host.pk,
                                 "mode": {"from": host.mode, "to": ModeChoices.SALT},
                                 "salt_minion": {"from": host.salt_minion, "to": minion},
                                 "key": {"from": host.key_fingerprint,
                                         "to": fields["key_fingerprint"]}})  # fmt: skip
        self.stdout.write(f"{'added' if created else 'now'} salt {ip} (minion {minion}); the "
                          "salt gateway serves it (python -m gateway --salt)")  # fmt: skip

    def _salt_minions(self, opts):
        hosts = grants.hosts_for(
            self.user,
            Action.VIEW,
            Host.objects.filter(mode=ModeChoices.SALT).exclude(salt_minion=""),
        )
        self.stdout.write(",".join(f"{h.ip}={h.salt_minion}" for h in hosts))

    def _trust(self, opts):
        ips = self._ips(opts["ips"])
        # Recording a host key is key management, as `keys accept` is: the permission and a
        # keys grant on every host (a refusal is audited). VIEW would let --replace be a MITM.
        keys.may_manage(current_actor(), "trust", ips)
        hosts = {h.ip: h for h in Host.objects.filter(ip__in=ips)}
        problems = 0
        for ip in ips:
            host = hosts.get(ip)
            if host is None or host.mode != ModeChoices.SSH:
                self.stderr.write(f"{ip}: not an ssh-mode host (hosts add {ip} --mode ssh ...)")
                problems += 1
                continue
            try:
                key = ssh.line(ssh.presented_key(ip, host.ssh_port))
            except ConnectionError as exc:
                self.stderr.write(f"{ip}: {exc}")
                problems += 1
                continue
            new = ssh.fingerprint(key)
            if host.ssh_host_key and host.ssh_host_key != key:
                old = ssh.fingerprint(host.ssh_host_key)
                if not opts["replace"]:
                    self.stderr.write(
                        f"{ip}: HOST KEY CHANGED: recorded {old}, presented now {new}. "
                        "Refused: someone may be in the middle. If the host was reinstalled, "
                        f"check {new} on its console, then `hosts trust {ip} --replace`."
                    )
                    problems += 1
                    continue
                self.stdout.write(f"{ip}: replaced {old} with {new}")
            elif host.ssh_host_key == key:
                self.stdout.write(f"{ip}: already trusted {new}")
                continue
            else:
                self.stdout.write(f"{ip}: trusted {new}")
            Host.objects.filter(pk=host.pk).update(ssh_host_key=key)
            detail = {"fingerprint": new, "replaced": bool(host.ssh_host_key)}
            audit.record(current_actor(), "key.trust", targets_resolved=[ip], detail=detail)
        if problems:
            raise CommandError(f"{problems} host(s) not trusted", returncode=2)

    def _remove(self, opts):
        self.require("hosts.delete_host", "remove hosts")
        ips = self._ips(opts["ips"])
        # A host this user may not see is as unknown to them as one that does not exist.
        visible = grants.hosts_for(self.user, Action.VIEW, Host.objects.filter(ip__in=ips))
        unknown = sorted(set(ips) - set(visible.values_list("ip", flat=True)))
        if unknown:
            raise CommandError(
                f"unknown host(s): {', '.join(unknown)}; nothing removed", returncode=2
            )
        _count, _ = Host.objects.filter(ip__in=ips).delete()
        self.stdout.write(f"removed {len(ips)} host(s)")
