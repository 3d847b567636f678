"""`manage.py signing_key [--public | --create]`: the key that signs what agents run."""

from django.core.management.base import CommandError

from cmdb.jobs import signer
from cmdb.jobs.cli import FleetCommand
from wire import signing


class Command(FleetCommand):
    needs_user = False
    help = (
        "Show where the server's Ed25519 signing key and its public key are (made at the default "
        "path on first use). Give agents the public key: --pubkey or $CMDB_AGENT_PUBKEY."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--public", action="store_true", help="print the public key (PEM) for agents"
        )
        parser.add_argument(
            "--create",
            action="store_true",
            help="make the key at $CMDB_SIGNING_KEY if it is missing (the default path is "
            "made without asking)",
        )

    def handle(self, *args, **opts):
        path = signer.key_path()
        try:
            key = signing.generate_key_pair(path) if opts["create"] else signer.private_key()
        except signing.SigningKeyError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if opts["public"]:
            self.stdout.write(signing.public_pem(key).decode(), ending="")
            return
        self.stdout.write(f"private key: {path}\npublic key:  {signing.public_path(path)}")
