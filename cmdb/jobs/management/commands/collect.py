"""`manage.py collect --hosts ...`: collect facts again; prints the job id at once."""

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
    help = "Collect facts from hosts into the CMDB; prints the job id (read it with check_task)."

    def add_arguments(self, parser):
        add_target_arguments(parser)
        add_rolling_arguments(parser)
        add_confirm_argument(parser)

    def handle(self, *args, **opts):
        print_job(self, services.collect(targets(opts), self.actor))
