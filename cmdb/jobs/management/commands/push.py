"""`manage.py push SRC DEST --hosts ...`: put a file or a folder on hosts, verified by sha256."""

from django.core.management.base import CommandError

from cmdb.celery import app
from cmdb.files.uploads import prepare_push
from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.cli import (
    EXIT_INVALID,
    FleetCommand,
    add_target_arguments,
    dispatch_from_options,
    refusals,
    request_from_options,
)
from cmdb.jobs.dispatch import check_request


class Command(FleetCommand):
    help = (
        "Push a file (or a folder, as one archive unpacked on the host) to DEST on each host. "
        "Per host: verified (sha256), skipped (already equal) or failed (why)."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="local file or folder")
        parser.add_argument("dest", help="absolute path on the hosts (the folder, for a folder)")
        add_target_arguments(parser)
        parser.add_argument("--mode", help="octal mode to set, e.g. 0644")
        parser.add_argument("--owner", help="user or user:group to set (when the agent is root)")
        parser.add_argument(
            "--batch",
            type=int,
            help="hosts at a time; the next batch starts when the previous one has ended",
        )
        parser.add_argument(
            "--max-failures",
            type=int,
            help="stop (the rest end cancelled) once more hosts than this have failed",
        )

    def handle(self, *args, **opts):
        if not opts["dest"].startswith("/"):
            raise CommandError(f"{opts['dest']!r}: the target must be an absolute path",
                               returncode=EXIT_INVALID)  # fmt: skip
        batching = {n: opts[n] for n in ("batch", "max_failures") if opts[n] is not None}
        # Targets, batching and the signing key first: a large upload for a mistyped host
        # would be for nothing.
        with refusals():
            check_request(request_from_options(opts, JobKindChoices.PUSH, params=batching))
        try:
            params = prepare_push(app, opts["source"], opts["dest"], opts["mode"], opts["owner"])
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc), returncode=EXIT_INVALID) from None
        dispatch_from_options(self, opts, JobKindChoices.PUSH, params={**params, **batching})
