"""`manage.py collect --hosts ...`: collect facts again; prints the job id at once."""

from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.cli import FleetCommand, add_target_arguments, dispatch_from_options


class Command(FleetCommand):
    help = "Collect facts from hosts into the CMDB; prints the job id (read it with check_task)."

    def add_arguments(self, parser):
        add_target_arguments(parser)

    def handle(self, *args, **opts):
        dispatch_from_options(self, opts, JobKindChoices.COLLECT)
