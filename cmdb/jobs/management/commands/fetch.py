"""`manage.py fetch PATH --hosts ... [--to DIR]`: copy a file from each host to DIR/<ip>/."""

from pathlib import Path

from django.core.management.base import CommandError

from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.cli import EXIT_INVALID, FleetCommand, add_target_arguments, dispatch_from_options


class Command(FleetCommand):
    help = (
        "Fetch a file from each host into DIR/<host ip>/ (or the server's CMDB_FETCH_DIR), "
        "verified by sha256."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="absolute path of the file on the hosts")
        add_target_arguments(parser)
        parser.add_argument(
            "--to",
            help="local folder (one subfolder per host); by default CMDB_FETCH_DIR/<job id>, "
            "where the API and the admin serve the copies from",
        )

    def handle(self, *args, **opts):
        if not opts["path"].startswith("/"):
            raise CommandError(f"{opts['path']!r}: give an absolute path",
                               returncode=EXIT_INVALID)  # fmt: skip
        params = {"agent": {"path": opts["path"]}}
        if opts["to"]:
            # The central worker writes the files: it needs the folder as an absolute path.
            params["to"] = str(Path(opts["to"]).resolve())
        dispatch_from_options(self, opts, JobKindChoices.FETCH, params=params)
