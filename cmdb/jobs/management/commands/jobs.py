"""`manage.py jobs`: the recent jobs, newest first, with short ids and how each went."""

from django.core.management.base import CommandError

from client.grouping import summary_line
from client.report import NOT_OK
from cmdb.jobs import documents, listing
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.cli import EXIT_INVALID, FleetCommand
from cmdb.jobs.management.commands.check_task import E_MAY_NOT_VIEW, EXIT_UNKNOWN, VIEW_PERMISSION

#: Characters of a job id shown: enough to tell jobs apart, and taken back by every command.
SHORT_ID = 8
COMMAND_WIDTH = 40


def outcome(counts: dict[str, int]) -> str:
    state = documents.progress_of(counts)
    if not counts:
        return "no hosts"
    return "running" if not state.done else "ok" if state.ok else "FAILED"


def short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class Command(FleetCommand):
    help = (
        "List recent jobs (newest first): short id (check_task, cancel and rerun take it), "
        "kind, command, who, when, outcome and hosts per state."
    )

    def add_arguments(self, parser):
        parser.add_argument("--state", dest="states", action="append", default=[],
                            choices=State.values, metavar="STATE",
                            help="only jobs with a host in this state (repeatable)")  # fmt: skip
        parser.add_argument(
            "--failed", action="store_true", help="only jobs with a host that did not end ok"
        )
        parser.add_argument("--user", help="only jobs this user asked for")
        parser.add_argument("--since", help="only jobs since: an age (30m, 6h, 2d) or a date")
        parser.add_argument("--limit", type=int, default=20, help="at most this many (20)")

    def handle(self, *args, **opts):
        if not self.user.has_perm(VIEW_PERMISSION):
            message = E_MAY_NOT_VIEW.format(user=self.user.get_username())
            raise CommandError(message, returncode=EXIT_UNKNOWN)
        try:
            after = listing.since(opts["since"]) if opts["since"] else None
        except ValueError as exc:
            raise CommandError(str(exc), returncode=EXIT_INVALID) from None
        states = [*opts["states"], *(NOT_OK if opts["failed"] else ())]
        found = listing.recent(self.user, states, opts["user"], after, max(opts["limit"], 1))
        for line in table(found):
            self.stdout.write(line)


def table(found: list[listing.Recent]) -> list[str]:
    rows = [("ID", "KIND", "COMMAND", "BY", "CREATED (UTC)", "OUTCOME", "HOSTS")]
    for r in found:
        hidden = f", {r.hidden} not shown" if r.hidden else ""
        rows.append((str(r.job.pk)[:SHORT_ID], r.job.kind, short(r.job.command, COMMAND_WIDTH),
                     r.job.requested_by, f"{r.job.created:%Y-%m-%d %H:%M}", outcome(r.counts),
                     summary_line(r.counts) + hidden))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
            + "  " + row[-1] for row in rows]  # fmt: skip
