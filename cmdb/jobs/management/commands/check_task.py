"""`manage.py check_task ID`: the tally per state, then the hosts grouped by outcome (or each
host's state, exit code, duration and output); filters by state, host lists, CSV/JSON lines."""

import sys
import time

from django.core.management.base import CommandError

from client import export
from client import report as shown
from cmdb.access import visible
from cmdb.jobs import documents, follow, kept, report, services
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.cli import FleetCommand

EXIT_OK, EXIT_NOT_OK, EXIT_UNKNOWN, EXIT_UNFINISHED = 0, 1, 2, 3
#: What seeing a job takes, besides a view grant on its hosts (as on the API and the web).
VIEW_PERMISSION = "jobs.view_job"
E_MAY_NOT_VIEW = "{user} may not view jobs (that takes the permission jobs.view_job)"


#: The API's paths of the documents' links. Not reverse(): that imports every URLconf, the
#: whole API with it, half a second on each call (a test holds these to reverse's answers).
PATHS = {
    "api:job-detail": "/api/jobs/{pk}/",
    "api:hosttask-detail": "/api/host-tasks/{task_id}/",
    "api:hosttask-file": "/api/host-tasks/{task_id}/file/",
}


def path_to(name: str, **kwargs) -> str:
    """Links in a document printed here: the API's paths (no request, so no host name)."""
    return PATHS[name].format(**kwargs)


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
        parser.add_argument(
            "--follow",
            action="store_true",
            help="stream each host's output as it comes, until all have ended",
        )
        parser.add_argument(
            "--full",
            action="store_true",
            help="the whole output kept on the server (run --keep-output)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="the document GET /api/jobs/ID/ (or /api/host-tasks/ID/) answers",
        )
        add_result_arguments(parser)

    def handle(self, *args, **opts):
        # The CLI's user (--as / CMDB_USER) sees what the API would show them: their hosts'
        # tasks, the others counted, output with jobs.view_output.
        user = self.user
        if user is not None and not user.has_perm(VIEW_PERMISSION):
            message = E_MAY_NOT_VIEW.format(user=user.get_username())
            raise CommandError(message, returncode=EXIT_UNKNOWN)
        if opts["follow"]:
            follow.exit_with(
                self, follow.follow(self.stdout, opts["id"], user, opts["wait_timeout"])
            )
        found = services.find(opts["id"], user)
        if opts["full"]:
            sys.exit(kept.write_full(self.stdout, found, user, self.actor))
        if opts["wait"]:
            found = self._wait(opts["id"], opts["wait_timeout"], user)
        tasks = found.tasks
        output = visible.reads_output(user)
        if opts["json"]:
            document = self._document(opts["id"], found, output)
            self.stdout.write(documents.dumps(document))  # as json.dumps(indent=2) writes it
        else:
            self.stdout.write(results_text(found, output, opts), ending="")
        state = documents.progress(tasks)
        if not state.done:
            sys.exit(EXIT_UNFINISHED)
        if not state.ok:
            sys.exit(EXIT_NOT_OK)

    @staticmethod
    def _document(ident: str, found: services.Found, output: bool) -> dict:
        # A host task's id shows that host task, as the API's /api/host-tasks/ID/ does.
        tasks = found.tasks
        if len(tasks) == 1 and tasks[0].task_id == ident.strip():
            return documents.task_document(tasks[0], path_to, output)
        return documents.job_document(found.job, tasks, path_to, output, found.hidden)

    def _wait(self, ident, limit, user=None) -> services.Found:
        deadline = None if limit is None else time.monotonic() + limit
        last = None
        while True:
            found = services.find(ident, user)
            tasks = found.tasks
            done = sum(t.is_terminal for t in tasks)
            line = f"{done}/{len(tasks)} hosts finished ({report.summary(tasks)})"
            if line != last:
                # Progress, not an error: plain, not stderr's bold red.
                self.stderr.write(line, style_func=lambda text: text)
                last = line
            if done == len(tasks) or (deadline is not None and time.monotonic() > deadline):
                return found
            time.sleep(0.25)


def add_result_arguments(parser) -> None:
    """What of a job is shown, at a few hundred hosts: grouped, filtered, listed, exported."""
    parser.add_argument("--no-group", dest="group", action="store_false",
                        help="one block per host (default: hosts with the same state, exit "
                        "code and output as one block, the odd ones first)")  # fmt: skip
    parser.add_argument(
        "--state",
        dest="states",
        action="append",
        default=[],
        metavar="STATE",
        choices=State.values,
        help="only the hosts in this state (repeatable)",
    )
    parser.add_argument(
        "--failed",
        action="store_true",
        help=f"only the hosts that did not end ok ({', '.join(shown.NOT_OK)})",
    )
    parser.add_argument("--hosts-only", action="store_true",
                        help="only the hosts, comma-separated, ready to paste into --hosts: a "
                        "line per state (\"failed: a,b\"), or with --state/--failed one line "
                        "of them alone")  # fmt: skip
    parser.add_argument(
        "--format",
        choices=export.FORMATS,
        default=None,
        help="every host task shown as CSV or JSON lines (one per host)",
    )


def chosen_states(opts: dict) -> list[str]:
    return [*opts.get("states", ()), *(shown.NOT_OK if opts.get("failed") else ())]


def results_text(found: services.Found, output: bool, opts: dict) -> str:
    states = chosen_states(opts)
    if opts.get("hosts_only") or opts.get("format"):
        rows = shown.chosen([report.row(t, output) for t in found.tasks], states)
        if opts.get("format"):
            return export.export(rows, opts["format"])
        return shown.hosts_by_state(rows, labelled=not states) if rows else ""
    return report.format_job(found.job, found.tasks, found.hidden, output,
                             grouped=opts.get("group", True), states=states)  # fmt: skip
