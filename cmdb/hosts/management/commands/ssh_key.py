"""`manage.py ssh_key [--public]`: the key the SSH gateway logs in to hosts with."""

from django.core.management.base import CommandError

from cmdb.hosts import ssh
from cmdb.jobs.cli import FleetCommand


class Command(FleetCommand):
    needs_user = False
    help = (
        "Show where the server's SSH key is (made at the default path on first use); --public "
        "prints the line for ssh-mode hosts' authorized_keys."
    )

    def add_arguments(self, parser):
        parser.add_argument("--public", action="store_true",
                            help="print the authorized_keys line")  # fmt: skip

    def handle(self, *args, **opts):
        try:
            public = ssh.public_line()
        except (ssh.SSHKeyError, OSError) as exc:
            raise CommandError(str(exc), returncode=2) from None
        if opts["public"]:
            self.stdout.write(public)
            return
        self.stdout.write(f"private key: {ssh.client_key_path()}\npublic key:  {public}")
