"""`manage.py cancel ID`: stop what has not finished of a job or one host task."""

from django.core.management.base import CommandError

from cmdb.celery import app
from cmdb.jobs.cli import FleetCommand
from cmdb.jobs.dispatch import cancel
from cmdb.jobs.models import HostTask


class Command(FleetCommand):
    help = "Cancel the unfinished host tasks of a job (or one host task)."

    def add_arguments(self, parser):
        parser.add_argument("id", help="job id or per-host task id")

    def handle(self, *args, **opts):
        try:
            _, tasks = HostTask.objects.for_id(opts["id"])
        except LookupError as exc:
            raise CommandError(str(exc), returncode=2) from None
        count = cancel(tasks, app)
        self.stdout.write(
            f"cancel sent to {count} unfinished host task(s)"
            if count
            else "nothing to cancel: every host task has finished"
        )
