"""`manage.py push SRC DEST --hosts ...`: put a file or a folder on hosts, verified by sha256."""

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
        "Push a file (or a folder, as one archive unpacked on the host) to DEST on each host. "
        "Per host: verified (sha256), skipped (already equal) or failed (why)."
    )
    refused = "nothing pushed"

    def add_arguments(self, parser):
        parser.add_argument("source", help="local file or folder")
        parser.add_argument("dest", help="absolute path on the hosts (the folder, for a folder)")
        add_target_arguments(parser)
        parser.add_argument("--mode", help="octal mode to set, e.g. 0644")
        parser.add_argument("--owner", help="user or user:group to set (when the agent is root)")
        parser.add_argument(
            "--allow-unsafe-parents",
            action="store_true",
            help="write even where a folder on the way is one a non-root user can change "
            "(refused otherwise: that user could swap what root writes)",
        )
        add_rolling_arguments(parser)
        add_confirm_argument(parser)

    def handle(self, *args, **opts):
        job = services.push(
            opts["source"], opts["dest"], targets(opts), self.actor, mode=opts["mode"],
            owner=opts["owner"], allow_unsafe_parents=opts["allow_unsafe_parents"],
        )  # fmt: skip
        print_job(self, job)
