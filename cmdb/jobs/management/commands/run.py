"""`manage.py run "df -h" --hosts 10.0.3.55 web1`: dispatch a command, print the job id at once."""

import getpass

from django.core.management.base import BaseCommand, CommandError

from cmdb.celery import app
from cmdb.jobs.dispatch import BrokerUnavailable, CommandRequest, DispatchError, dispatch_command

#: Exit codes scripts can rely on.
EXIT_INVALID = 2
EXIT_BROKER_DOWN = 3


class Command(BaseCommand):
    help = "Run a shell command on hosts; prints the job id at once (read it with check_task)."

    def add_arguments(self, parser):
        parser.add_argument("command", help="shell command, run with /bin/sh -c on each host")
        parser.add_argument(
            "--hosts",
            nargs="+",
            required=True,
            metavar="HOST",
            help="IP addresses or hostnames of known hosts",
        )
        parser.add_argument(
            "--timeout",
            type=int,
            default=None,
            help="seconds before the command is killed on a host",
        )
        parser.add_argument(
            "--reach-timeout",
            type=int,
            default=None,
            help="seconds a host's agent has to pick the task up",
        )

    def handle(self, *args, **opts):
        request = CommandRequest(
            command=opts["command"],
            targets=opts["hosts"],
            timeout=opts["timeout"],
            reach_timeout=opts["reach_timeout"],
            requested_by=f"cli:{getpass.getuser()}",
        )
        try:
            job = dispatch_command(request, app)
        except DispatchError as exc:
            raise CommandError(
                "nothing dispatched:\n  " + "\n  ".join(exc.problems), returncode=EXIT_INVALID
            ) from None
        except BrokerUnavailable as exc:
            raise CommandError(
                f"{exc}\njob id: {exc.job.id}", returncode=EXIT_BROKER_DOWN
            ) from None
        self.stdout.write(f"task id: {job.id}")
