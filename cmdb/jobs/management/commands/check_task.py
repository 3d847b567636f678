"""`manage.py check_task ID`: each host's state, exit code, duration and output."""

import json
import sys
import time

from django.core.management.base import CommandError

from cmdb.jobs import report
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.cli import FleetCommand
from cmdb.jobs.models import HostTask

EXIT_OK, EXIT_NOT_OK, EXIT_UNKNOWN, EXIT_UNFINISHED = 0, 1, 2, 3


class Command(FleetCommand):
    help = (
        "Show a job (or one host task) by id. Exit code: 0 every host ok, 1 finished with "
        "failures, 2 unknown id, 3 not finished yet."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", help="job id (printed by run) or a per-host task id")
        parser.add_argument(
            "--wait", action="store_true", help="show progress until every host has finished"
        )
        parser.add_argument(
            "--wait-timeout",
            type=float,
            default=None,
            help="give up waiting after this many seconds (exit 3)",
        )
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, **opts):
        try:
            job, tasks = HostTask.objects.for_id(opts["id"])
        except LookupError as exc:
            raise CommandError(str(exc), returncode=EXIT_UNKNOWN) from None
        if opts["wait"]:
            job, tasks = self._wait(opts["id"], tasks, opts["wait_timeout"])
        if opts["json"]:
            self.stdout.write(json.dumps(report.job_json(job, tasks), indent=2))
        else:
            self.stdout.write(report.format_job(job, tasks), ending="")
        if not all(t.is_terminal for t in tasks):
            sys.exit(EXIT_UNFINISHED)
        if not tasks or any(t.state != State.OK for t in tasks):
            sys.exit(EXIT_NOT_OK)

    def _wait(self, ident, tasks, limit):
        deadline = None if limit is None else time.monotonic() + limit
        last = None
        while True:
            job, tasks = HostTask.objects.for_id(ident)
            done = sum(t.is_terminal for t in tasks)
            line = f"{done}/{len(tasks)} hosts finished ({report.summary(tasks)})"
            if line != last:
                self.stderr.write(line)
                last = line
            if done == len(tasks) or (deadline is not None and time.monotonic() > deadline):
                return job, tasks
            time.sleep(0.25)
