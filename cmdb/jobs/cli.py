"""What the project's commands share: target options, the service layer's errors as exit codes."""

import argparse
import contextlib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from client.report import not_answering_lines
from cmdb.access.actor import Actor
from cmdb.audit.context import acting_as
from cmdb.jobs import listing
from cmdb.jobs.exceptions import BrokerDown, CannotSign, NotFound, Refused
from cmdb.jobs.services import Targets

#: Exit codes scripts can rely on.
EXIT_INVALID = 2
EXIT_BROKER_DOWN = 3

E_WHO = ("say who you are: --as USER or CMDB_USER=USER, a user of this server "
         "(`python manage.py createsuperuser` makes one; `make up` made 'admin' for this "
         "checkout's own fleet)")  # fmt: skip
E_AS_EMPTY = "--as names nobody: give a username; nothing done"
E_NO_SUCH_USER = "no user {name!r} on this server (--as / CMDB_USER); nothing done"
E_INACTIVE = "user {name!r} is inactive (--as / CMDB_USER); nothing done"
E_NOT_ALLOWED = "{user} may not {what} (needs the permission {perm}); nothing done"


class FleetCommand(BaseCommand):
    """Base of the project's commands, which operators run in loops and scripts.

    Django's system checks, run before every command by default, import every URLconf and
    with it the API's schema tooling: a third of a second on each call (`run` took 0.96 s
    with them, 0.60 s without). They belong to `manage.py check`, which the tests run.
    """

    requires_system_checks = []

    #: What a refused request says first ("nothing dispatched", "nothing pushed").
    refused = "nothing dispatched"
    #: Whether the command acts as a named user (--as / CMDB_USER). Only the server's own
    #: set-up tools (keys, ACLs it prints) do without one.
    needs_user = True

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if self.needs_user:
            _add_as(parser, default=None)
            # After a sub-command too (`keys accept IP --as alice`): argparse gives options
            # after one to its own parser.
            for sub in _subparsers(parser):
                _add_as(sub, default=argparse.SUPPRESS)
        return parser

    def execute(self, *args, **options):
        with refusals(self.refused):
            if not self.needs_user:
                return super().execute(*args, **options)
            self.actor = Actor(cli_user(options.get("as_user")), "cli")
            # What the app records by itself (group and IP changes) is this user's doing too.
            with acting_as(self.actor):
                return super().execute(*args, **options)

    @property
    def user(self):
        return self.actor.user

    def require(self, perm: str, what: str) -> None:
        """CommandError (exit 2) unless the acting user has the Django permission ``perm``."""
        if not self.user.has_perm(perm):
            name = self.user.get_username()
            message = E_NOT_ALLOWED.format(user=name, what=what, perm=perm)
            raise CommandError(message, returncode=EXIT_INVALID)


def _add_as(parser, default) -> None:
    parser.add_argument("--as", dest="as_user", metavar="USER", default=default,
                        help="act as this user of the server (default: $CMDB_USER); their "
                        "permissions and grants apply, and the audit trail names them")  # fmt: skip


def _subparsers(parser) -> list:
    return [sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for sub in action.choices.values()]  # fmt: skip


def cli_user(given: str | None):
    """The Django user the CLI acts as: ``--as``, else CMDB_USER (never $USER, which anyone
    sets). Refused, with what to do, when none is named or no such active user exists."""
    if given is not None and not given.strip():
        raise CommandError(E_AS_EMPTY, returncode=EXIT_INVALID)
    name = (given or settings.CMDB["CLI_USER"] or "").strip()
    if not name:
        raise CommandError(E_WHO, returncode=EXIT_INVALID)
    model = get_user_model()
    user = model.objects.filter(**{model.USERNAME_FIELD: name}).first()
    if user is None:
        raise CommandError(E_NO_SUCH_USER.format(name=name), returncode=EXIT_INVALID)
    if not user.is_active:
        raise CommandError(E_INACTIVE.format(name=name), returncode=EXIT_INVALID)
    return user


def add_target_arguments(parser) -> None:
    parser.add_argument(
        "--hosts",
        nargs="+",
        default=[],
        metavar="HOST",
        help="IP addresses or hostnames of known hosts (space- or comma-separated)",
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
    add_reach_arguments(parser)


def add_reach_arguments(parser) -> None:
    """Every host at once, and what to do with targets that cannot answer now."""
    parser.add_argument(
        "--all",
        action="store_true",
        help="every host you may act on (with --where: every one matching)",
    )
    parser.add_argument("--online-only", action="store_true",
                        help="leave out the targets whose agent is not online now (offline, "
                        "never seen), named on stderr; without it they are warned about and "
                        "end unreachable after the reach timeout. Exit code 0 either way "
                        "once dispatched; 2 when no target is online")  # fmt: skip


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
    # `--hosts a,b` as well as `--hosts a b`: both are what people type after other tools.
    hosts = [h for given in opts.get("hosts") or [] for h in given.split(",") if h.strip()]
    return Targets.of({**opts, "hosts": [h.strip() for h in hosts]})


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
    warn_not_answering(command, job)


def not_answering_text(job) -> str:
    """The targets that will not answer (--online-only left out, or offline, or never seen),
    a line each kind; "" when every one is online."""
    lines = not_answering_lines(listing.not_answering_document(job), job.reach_timeout)
    return "".join(line + "\n" for line in lines)


def warn_not_answering(command, job) -> None:
    if text := not_answering_text(job):
        command.stderr.write(text, ending="", style_func=lambda t: t)
