"""`manage.py rerun ID --failed`: the same command again, on the hosts of a job that failed."""

from client.report import NOT_OK
from cmdb.jobs import services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.cli import FleetCommand, add_confirm_argument, print_job


class Command(FleetCommand):
    help = (
        "Run a job again (the same command, collection or fetch, with its timeouts) as a new "
        "job, on its hosts in the states given (all its hosts by default); prints the new "
        "job's id. Your permissions and grants apply, as for run. Exit code 0 dispatched, 2 "
        "refused, 3 broker down."
    )

    def add_arguments(self, parser):
        parser.add_argument("id", help="job id (or a prefix of it that names only it)")
        parser.add_argument(
            "--failed",
            action="store_true",
            help=f"the hosts that did not end ok ({', '.join(NOT_OK)})",
        )
        parser.add_argument("--state", dest="states", action="append", default=[],
                            choices=State.values, metavar="STATE",
                            help="the hosts in this state (repeatable)")  # fmt: skip
        parser.add_argument(
            "--online-only",
            action="store_true",
            help="leave out the hosts whose agent is not online now",
        )
        add_confirm_argument(parser)

    def handle(self, *args, **opts):
        states = [*opts["states"], *(NOT_OK if opts["failed"] else ())]
        job = services.rerun(opts["id"], states, actor=self.actor,
                             online_only=opts["online_only"], confirm=opts["confirm"])  # fmt: skip
        print_job(self, job)
