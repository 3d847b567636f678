"""`manage.py collect --hosts ...`: collect facts again; prints the job id at once."""

from django.core.management.base import BaseCommand

from cmdb.jobs.choices import JobKindChoices
from cmdb.jobs.cli import add_target_arguments, dispatch_from_options


class Command(BaseCommand):
    help = "Collect facts from hosts into the CMDB; prints the job id (read it with check_task)."

    def add_arguments(self, parser):
        add_target_arguments(parser)

    def handle(self, *args, **opts):
        dispatch_from_options(self, opts, JobKindChoices.COLLECT)
