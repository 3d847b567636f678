"""`manage.py cancel ID`: stop what has not finished of a job or one host task."""

from cmdb.jobs import services
from cmdb.jobs.cli import FleetCommand


class Command(FleetCommand):
    help = "Cancel the unfinished host tasks of a job (or one host task)."

    def add_arguments(self, parser):
        parser.add_argument("id", help="job id or per-host task id")

    def handle(self, *args, **opts):
        count = services.cancel(opts["id"], actor=self.actor)
        self.stdout.write(
            f"cancel sent to {count} unfinished host task(s)"
            if count
            else "nothing to cancel: every host task has finished"
        )
