"""What the project's commands share: target options, the service layer's errors as exit codes."""

import contextlib
import getpass

from django.core.management.base import BaseCommand, CommandError

from cmdb.jobs.exceptions import BrokerDown, CannotSign, NotFound, Refused
from cmdb.jobs.services import Targets

#: Exit codes scripts can rely on.
EXIT_INVALID = 2
EXIT_BROKER_DOWN = 3


class FleetCommand(BaseCommand):
    """Base of the project's commands, which operators run in loops and scripts.

    Django's system checks, run before every command by default, import every URLconf and
    with it the API's schema tooling: a third of a second on each call (`run` took 0.96 s
    with them, 0.60 s without). They belong to `manage.py check`, which the tests run.
    """

    requires_system_checks = []

    #: What a refused request says first ("nothing dispatched", "nothing pushed").
    refused = "nothing dispatched"

    def execute(self, *args, **options):
        with refusals(self.refused):
            return super().execute(*args, **options)


def add_target_arguments(parser) -> None:
    parser.add_argument(
        "--hosts",
        nargs="+",
        default=[],
        metavar="HOST",
        help="IP addresses or hostnames of known hosts",
    )
    parser.add_argument(
        "--group",
        dest="groups",
        action="append",
        default=[],
        metavar="NAME",
        help="every host of a named group (repeatable)",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="filter on stored facts, e.g. os=debian or 'disk_free_pct<10' "
        "(repeatable, ANDed; alone, filters every host)",
    )
    parser.add_argument(
        "--timeout", type=int, default=None, help="seconds before the work is stopped on a host"
    )
    parser.add_argument(
        "--reach-timeout",
        type=int,
        default=None,
        help="seconds a host's agent has to pick the task up",
    )


def add_rolling_arguments(parser) -> None:
    """A canary, then batches, stopped past a failure limit (cmdb.jobs.rollout says the rules);
    checked with the targets, so that a mistake is said with every other."""
    parser.add_argument(
        "--batch",
        metavar="N|P%",
        help="hosts at a time, or a percentage of the job's hosts (rounded up); the next batch "
        "starts when the previous one has ended",
    )
    parser.add_argument(
        "--max-failures",
        metavar="M|P%",
        help="stop once more hosts than this have failed, or than this percentage of the job's "
        "hosts (rounded down); the rest end cancelled, saying why",
    )
    parser.add_argument(
        "--canary",
        metavar="N",
        help="send to the first N hosts alone; any failure among them stops the rest",
    )


def add_confirm_argument(parser) -> None:
    parser.add_argument(
        "--yes",
        dest="confirm",
        action="store_true",
        help="confirm a job that reaches more hosts than may be reached without confirming "
        "(CMDB_CONFIRM_ABOVE, or a grant's host ceiling)",
    )


def targets(opts: dict) -> Targets:
    return Targets.of(opts)


def requested_by() -> str:
    return f"cli:{getpass.getuser()}"


@contextlib.contextmanager
def refusals(refused: str = "nothing dispatched"):
    """The service layer's errors as the command's own: a message and an exit code."""
    try:
        yield
    except Refused as exc:
        raise CommandError(f"{refused}:\n  " + "\n  ".join(exc.problems),
                           returncode=EXIT_INVALID) from None  # fmt: skip
    except NotFound as exc:
        raise CommandError(str(exc), returncode=EXIT_INVALID) from None
    except CannotSign as exc:
        raise CommandError(f"nothing dispatched: {exc}", returncode=EXIT_INVALID) from None
    except BrokerDown as exc:
        job = f"\njob id: {exc.job.id}" if exc.job is not None else ""
        raise CommandError(f"{exc}{job}", returncode=EXIT_BROKER_DOWN) from None


def print_job(command, job) -> None:
    command.stdout.write(f"task id: {job.id}")
