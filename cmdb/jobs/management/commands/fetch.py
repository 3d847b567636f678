"""`manage.py fetch PATH --hosts ... [--to DIR]`: copy a file from each host to DIR/<ip>/."""

from cmdb.jobs import services
from cmdb.jobs.cli import (
    FleetCommand,
    add_confirm_argument,
    add_rolling_arguments,
    add_target_arguments,
    print_job,
    targets,
)


class Command(FleetCommand):
    help = (
        "Fetch a file from each host into DIR/<host ip>/ (or the server's CMDB_FETCH_DIR), "
        "verified by sha256."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="absolute path of the file on the hosts")
        add_target_arguments(parser)
        add_rolling_arguments(parser)
        add_confirm_argument(parser)
        parser.add_argument(
            "--to",
            help="local folder (one subfolder per host); by default CMDB_FETCH_DIR/<job id>, "
            "where the API and the admin serve the copies from",
        )

    def handle(self, *args, **opts):
        job = services.fetch(opts["path"], targets(opts), self.actor, to=opts["to"])
        print_job(self, job)
