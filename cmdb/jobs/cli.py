"""What the dispatching commands share: target options, dispatch, exit codes."""

import contextlib
import getpass

from django.core.management.base import BaseCommand, CommandError

from cmdb.celery import app
from cmdb.jobs.dispatch import BrokerUnavailable, CommandRequest, DispatchError, dispatch_command
from cmdb.jobs.signer import SigningKeyError


class FleetCommand(BaseCommand):
    """Base of the project's commands, which operators run in loops and scripts.

    Django's system checks, run before every command by default, import every URLconf and
    with it the API's schema tooling: a third of a second on each call (`run` took 0.96 s
    with them, 0.60 s without). They belong to `manage.py check`, which the tests run.
    """

    requires_system_checks = []


#: Exit codes scripts can rely on.
EXIT_INVALID = 2
EXIT_BROKER_DOWN = 3


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


def request_from_options(
    opts: dict, kind: str, text: str = "", params: dict | None = None
) -> CommandRequest:
    return CommandRequest.from_targets(
        opts, kind, f"cli:{getpass.getuser()}", command=text, params=params
    )


@contextlib.contextmanager
def refusals():
    """Dispatch errors as the command's own: a message and an exit code scripts can rely on."""
    try:
        yield
    except DispatchError as exc:
        raise CommandError(
            "nothing dispatched:\n  " + "\n  ".join(exc.problems), returncode=EXIT_INVALID
        ) from None
    except SigningKeyError as exc:
        raise CommandError(f"nothing dispatched: {exc}", returncode=EXIT_INVALID) from None
    except BrokerUnavailable as exc:
        raise CommandError(f"{exc}\njob id: {exc.job.id}", returncode=EXIT_BROKER_DOWN) from None


def dispatch_from_options(
    command, opts: dict, kind: str, text: str = "", params: dict | None = None
) -> None:
    with refusals():
        job = dispatch_command(request_from_options(opts, kind, text, params), app)
    command.stdout.write(f"task id: {job.id}")
