"""`manage.py run "df -h" --hosts 10.0.3.55 web1`: dispatch a command, print the job id at once."""

from cmdb.jobs import follow, services
from cmdb.jobs.cli import (
    FleetCommand,
    add_confirm_argument,
    add_rolling_arguments,
    add_target_arguments,
    print_job,
    targets,
)


class Command(FleetCommand):
    help = "Run a shell command on hosts; prints the job id at once (read it with check_task)."

    def add_arguments(self, parser):
        parser.add_argument("command", help="shell command, run with /bin/sh -c on each host")
        add_target_arguments(parser)
        add_rolling_arguments(parser)
        add_confirm_argument(parser)
        follow.add_arguments(parser)

    def handle(self, *args, **opts):
        job = services.run(opts["command"], targets(opts), self.actor,
                           keep_output=opts["keep_output"] or None)  # fmt: skip
        print_job(self, job)
        if opts["wait"]:
            code = follow.follow(self.stdout, str(job.id), self.user, opts["wait_timeout"])
            follow.exit_with(self, code)
