"""`cmdb`: the thin client. Speaks only the REST API, with the token `cmdb login` kept, and
prints what the manage.py commands print, with their exit codes:

run       task id: ID; with --wait, then what check prints   exit 2 refused, 3 broker down
check     the job grouped by outcome                         exit 0 ok, 1 failures, 2 unknown,
                                                                  3 not finished
jobs, hosts, cancel, rerun, login, completion

Errors go to stderr; any request the server refuses is exit 2; a server that does not answer
at all is exit 3 (try again later), as a broker that is down is for manage.py.
"""

import argparse
import getpass
import json
import sys
import time
from collections import Counter

from client import config, export, listing, live
from client import report as shown
from client.api import APIError, Client, Unreachable
from client.grouping import summary_line
from client.text import printable

EXIT_OK, EXIT_NOT_OK, EXIT_INVALID, EXIT_UNAVAILABLE = 0, 1, 2, 3
#: check's exit codes, as manage.py check_task's.
EXIT_UNKNOWN, EXIT_UNFINISHED = 2, 3
STATES = ("pending", "running", "storing", "ok", "failed", "timeout", "cancelled",
          "unreachable", "lost", "error")  # fmt: skip
#: How often --wait asks a server that does not push a job's events (client/live.py).
POLL = 0.25


class Failure(Exception):
    """What the command says on stderr, and its exit code."""

    def __init__(self, message: str, code: int = EXIT_INVALID):
        self.code = code
        super().__init__(message)


def out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def progress(text: str) -> None:
    # Progress on a terminal only: a script reading stdout gets the results alone.
    if sys.stderr.isatty():
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


# --- login -------------------------------------------------------------------------------------
W_TOKEN_ARGUMENT = (
    "warning: a token on the command line is seen by everyone on this machine "
    "(ps) and kept in your shell's history: use `--token -` (read from stdin, "
    "or asked for) instead"
)


def _token(given: str) -> str:
    """The token given with --token: "-" reads it from stdin (asked for, unechoed, on a
    terminal); another value is used as it is, with a warning (it was in ps)."""
    if given != "-":
        sys.stderr.write(W_TOKEN_ARGUMENT + "\n")
        return given
    token = getpass.getpass("token: ") if sys.stdin.isatty() else sys.stdin.readline()
    if not token.strip():
        raise Failure("no token read from stdin, nothing saved")
    return token.strip()


def cmd_login(args) -> int:
    url = args.url.rstrip("/")
    if "://" not in url:
        raise Failure(f"give the server's URL with its scheme (https://{url}), nothing saved")
    config.check_url(url)  # before any password or token is asked for, let alone sent
    if args.token:
        token = _token(args.token)
    else:
        username = args.username or input("username: ")
        password = getpass.getpass("password: ")
        answer = Client(url).post("/api/token/", {"username": username, "password": password})
        token = answer["token"]
    me = Client(url, token).get("/api/token/")  # the token works: who it is
    where = config.save(config.Config(url, token))
    out(f"logged in to {url} as {me.get('username')}; token kept in {where}")
    return EXIT_OK


# --- run, check, rerun, cancel -----------------------------------------------------------------
def _hosts(given: list[str]) -> list[str]:
    return [h.strip() for value in given for h in value.split(",") if h.strip()]


def targets_body(args) -> dict:
    body = {"hosts": _hosts(args.hosts), "groups": args.groups, "where": args.where}
    for flag in ("all", "online_only"):
        if getattr(args, flag, False):
            body[flag] = True
    for name in ("timeout", "reach_timeout", "batch", "max_failures", "canary"):
        if getattr(args, name, None) is not None:
            body[name] = getattr(args, name)
    if args.confirm:
        body["confirm"] = True
    return body


def dispatch(api: Client, body: dict, path: str = "/api/jobs/") -> dict:
    """The API's answer to a dispatch; its refusals as manage.py says them (exit 2), a broker
    down as exit 3 with the job id when it was recorded."""
    try:
        return api.post(path, body)
    except APIError as exc:
        if exc.status == 503:
            job = exc.body.get("job") if isinstance(exc.body, dict) else None
            said = str(exc) + (f"\njob id: {job}" if job else "")
            raise Failure(said, EXIT_UNAVAILABLE) from None
        if exc.status in (400, 403):
            raise Failure("nothing dispatched:\n  " + "\n  ".join(exc.problems)) from None
        raise


def warn_not_answering(api: Client, job: dict) -> None:
    """As manage.py run warns, on stderr: the targets offline, never seen, or left out."""
    reach = job.get("not_answering") or {}
    if not any(reach.values()):
        return
    timeout = api.get(f"/api/jobs/{job['id']}/").get("reach_timeout")  # said in the warning
    sys.stdout.flush()
    for line in shown.not_answering_lines(reach, timeout):
        sys.stderr.write(line + "\n")


def cmd_run(args, api: Client) -> int:
    job = dispatch(api, {"command": args.command, **targets_body(args)})
    out(f"task id: {job['id']}")
    warn_not_answering(api, job)
    if not args.wait:
        return EXIT_OK
    sys.stdout.flush()
    # The dispatch answer names every host task: no read of the job before its events.
    pending = {t["task_id"]: t["host"] for t in job.get("tasks") or []}
    return show(api, job["id"], args, wait=True, pending=pending)


def find(api: Client, ident: str) -> tuple[dict, list[dict], bool]:
    """The job, the host tasks shown, and whether ``ident`` named one host task."""
    ident = ident.strip()
    if "/" in ident or not ident:
        raise Failure(f"no job or host task {ident!r}", EXIT_UNKNOWN)
    try:
        job = api.get(f"/api/jobs/{ident}/")
        return job, api.job_tasks(job), False
    except APIError as exc:
        if exc.status != 404:
            raise
    try:
        task = api.get(f"/api/host-tasks/{ident}/")
    except APIError as exc:
        if exc.status == 404:
            raise Failure(f"no job or host task {ident!r}", EXIT_UNKNOWN) from None
        raise
    return api.get(f"/api/jobs/{task['job']}/"), [task], True


def _done(tasks: list[dict]) -> int:
    return sum(t.get("state") not in ("pending", "running", "storing") for t in tasks)


def wait_for(api: Client, ident: str, limit: float | None, stream: bool = False,
             pending: dict | None = None):  # fmt: skip
    """The job once every host has ended (or ``limit`` passed): its events pushed by the
    server (client/live.py), or polled when it will not push them. Each host's output shown
    as it comes on a terminal, or with ``stream``. ``pending``: the host tasks to wait for
    (task id: host), when known without asking."""
    started = time.monotonic()
    if pending is None:
        job, tasks, _ = find(api, ident)
        pending = {t["task_id"]: t.get("host") or "" for t in tasks
                   if t.get("state") not in live.TERMINAL}  # fmt: skip
        job_id = job["id"]
    else:
        job_id = ident
    if pending:
        streaming = stream or sys.stdout.isatty()
        shown = live.Shown(_written, list(pending.values())) if streaming else None
        reread = lambda: find(api, ident)[1]  # noqa: E731
        try:
            live.wait_pushed(api, job_id, pending, reread, limit, shown)
        except live.NotPushed:
            left = None if limit is None else max(limit - (time.monotonic() - started), 0)
            return poll_for(api, ident, left)
    return find(api, ident)


def _written(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()  # seen as it comes, on a pipe too (--stream)


def poll_for(api: Client, ident: str, limit: float | None):
    deadline = None if limit is None else time.monotonic() + limit
    last = None
    while True:
        job, tasks, one = find(api, ident)
        done = _done(tasks)
        tally = summary_line(Counter(t.get("state") or "" for t in tasks))
        line = f"{done}/{len(tasks)} hosts finished ({tally})"
        if line != last:
            progress(line)
            last = line
        if done == len(tasks) or (deadline is not None and time.monotonic() > deadline):
            return job, tasks, one
        time.sleep(POLL)


def _shown_time(value):
    """The API's "2026-12-03T12:28:02.436924Z" as the server's CLI prints a time."""
    if not isinstance(value, str) or not value.endswith("Z") or len(value) < 19:
        return value
    return value[:19].replace("T", " ") + " UTC"


def as_rows(tasks: list[dict]) -> list[dict]:
    """The API's host tasks as cmdb.jobs.report.row makes the server's: the same times."""
    rows = []
    for task in tasks:
        row = {**task, "started_at": _shown_time(task.get("started_at")),
               "finished_at": _shown_time(task.get("finished_at"))}  # fmt: skip
        if task.get("late"):
            row["late"] = {**task["late"], "received_at": _shown_time(task["late"].get(
                "received_at"))}  # fmt: skip
        rows.append(row)
    return rows


def chosen_states(args) -> list[str]:
    return [*(args.states or ()), *(shown.NOT_OK if args.failed else ())]


def results_text(job: dict, tasks: list[dict], one: bool, args) -> str:
    """As manage.py check_task prints it: the same formatter, on the API's documents."""
    output = not tasks or any(t.get("stdout") is not None for t in tasks)
    states, tasks = chosen_states(args), as_rows(tasks)
    if args.hosts_only or args.format:
        rows = shown.chosen(tasks, states)
        if not output:
            rows = [{**r, "stdout": None, "stderr": None} for r in rows]
        if args.format:
            return export.export(rows, args.format)
        return shown.hosts_by_state(rows, labelled=not states) if rows else ""
    counts = Counter(t.get("state") or "" for t in tasks)
    hidden = 0 if one else job.get("hidden_hosts") or 0
    return shown.format_job(job, shown.chosen(tasks, states), hidden, output,
                            grouped=args.group, counts=counts)  # fmt: skip


def show(api: Client, ident: str, args, wait: bool, pending: dict | None = None) -> int:
    if wait:
        job, tasks, one = wait_for(api, ident, args.wait_timeout, args.stream, pending)
    else:
        job, tasks, one = find(api, ident)
    if getattr(args, "json", False):
        document = tasks[0] if one else {**job, "tasks": tasks, "tasks_next": None}
        out(json.dumps(document, indent=2))
    else:
        sys.stdout.write(results_text(job, tasks, one, args))
    if _done(tasks) < len(tasks):
        return EXIT_UNFINISHED
    return EXIT_OK if tasks and all(t.get("state") == "ok" for t in tasks) else EXIT_NOT_OK


def cmd_check(args, api: Client) -> int:
    return show(api, args.id, args, wait=args.wait)


def cmd_rerun(args, api: Client) -> int:
    ident = args.id.strip()
    body = {"states": args.states, "failed": args.failed, "online_only": args.online_only,
            "confirm": args.confirm}  # fmt: skip
    if "/" in ident or not ident:
        raise Failure(f"no job {ident!r}")
    try:
        new = dispatch(api, body, f"/api/jobs/{ident}/rerun/")
    except APIError as exc:
        if exc.status == 404:
            raise Failure(f"no job {ident!r}") from None
        raise
    out(f"task id: {new['id']}")
    warn_not_answering(api, new)
    return EXIT_OK


def cmd_cancel(args, api: Client) -> int:
    ident = args.id.strip()
    try:
        answer = api.post(f"/api/jobs/{ident}/cancel/")
    except APIError as exc:
        if exc.status != 404:
            raise
        try:
            answer = api.post(f"/api/host-tasks/{ident}/cancel/")
        except APIError as again:
            if again.status == 404:
                raise Failure(f"no job or host task {ident!r}") from None
            raise
    count = answer.get("cancelled", 0)
    out(f"cancel sent to {count} unfinished host task(s)" if count
        else "nothing to cancel: every host task has finished")  # fmt: skip
    return EXIT_OK


# --- jobs, hosts -------------------------------------------------------------------------------
def cmd_jobs(args, api: Client) -> int:
    limit = max(args.limit, 1)
    params = {"limit": limit, "kind": args.kind, "since": args.since,
              "requested_by": args.user, "state": chosen_states(args)}  # fmt: skip
    jobs = api.get("/api/jobs/", **params).get("results", [])
    for line in listing.table(jobs[:limit]):
        out(line)
    return EXIT_OK


def cmd_hosts(args, api: Client) -> int:
    action = args.action or "list"
    if action == "list":
        hosts = list(api.pages("/api/hosts/", limit=1000))
        if not hosts:
            out("no hosts yet: start an agent, or `cmdb hosts add IP`")
            return EXIT_OK
        out(f"{'IP':<16} {'HOSTNAME':<24} {'MODE':<6} {'AGENT':<8} LAST SEEN")
        for h in hosts:
            seen = (h.get("last_seen") or "")[:19].replace("T", " ") or "never"
            name = printable(h.get("hostname") or "")
            mode = h.get("mode") or "agent"
            out(f"{h['ip']:<16} {name:<24} {mode:<6} {h.get('agent_status', ''):<8} {seen}")
        return EXIT_OK
    if action == "add":
        if args.hostname and len(args.ips) > 1:
            raise Failure("--hostname names one host; give one IP with it")
        for ip in args.ips:
            try:
                api.post("/api/hosts/", {"ip": ip.strip(), "hostname": args.hostname})
                out(f"added: {ip.strip()}")
            except APIError as exc:
                if exc.status == 400 and any("already exists" in p for p in exc.problems):
                    out(f"already known: {ip.strip()}")
                    continue
                raise
        return EXIT_OK
    found, unknown = [], []
    for ip in args.ips:
        page = api.get("/api/hosts/", ip=ip.strip(), limit=1)
        (found.append(page["results"][0]) if page.get("results") else unknown.append(ip))
    if unknown:
        raise Failure(f"unknown host(s): {', '.join(unknown)}; nothing removed")
    for host in found:
        api.delete(f"/api/hosts/{host['id']}/")
    out(f"removed {len(found)} host(s)")
    return EXIT_OK


# --- completion --------------------------------------------------------------------------------
def cmd_completion(args) -> int:
    parser = build_parser()
    commands = _subcommands(parser)
    if args.shell == "bash":
        out(bash_completion(commands))
    else:
        out(zsh_completion(commands))
    return EXIT_OK


def _subcommands(parser) -> dict[str, list[str]]:
    """Each command and its options, read from the parser itself (never out of date)."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words = [s for a in sub._actions for s in a.option_strings]
                for inner in sub._actions:
                    # Sub-commands (hosts add) and positional choices (completion bash).
                    if inner.choices and not inner.option_strings:
                        words += list(inner.choices)
                found[name] = words
    return found


def bash_completion(commands: dict[str, list[str]]) -> str:
    cases = "\n".join(f"        {name}) words={' '.join(words)!r} ;;"
                      for name, words in commands.items())  # fmt: skip
    return f"""# bash completion for cmdb: eval "$(cmdb completion bash)"
_cmdb() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} words
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W '{" ".join(commands)}' -- "$cur"))
        return
    fi
    case ${{COMP_WORDS[1]}} in
{cases}
        *) words='' ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _cmdb cmdb"""


def zsh_completion(commands: dict[str, list[str]]) -> str:
    cases = "\n".join(f"    {name}) compadd -- {' '.join(words)} ;;"
                      for name, words in commands.items())  # fmt: skip
    return f"""#compdef cmdb
# zsh completion for cmdb: cmdb completion zsh > "${{fpath[1]}}/_cmdb"
if (( CURRENT == 2 )); then
  compadd -- {" ".join(commands)}
  return
fi
case ${{words[2]}} in
{cases}
esac"""


# --- the parser --------------------------------------------------------------------------------
def _result_arguments(p) -> None:
    p.add_argument(
        "--no-group",
        dest="group",
        action="store_false",
        help="one block per host (default: hosts alike as one block)",
    )
    p.add_argument(
        "--state",
        dest="states",
        action="append",
        default=[],
        choices=STATES,
        metavar="STATE",
        help="only the hosts in this state (repeatable)",
    )
    p.add_argument("--failed", action="store_true", help="only the hosts that did not end ok")
    p.add_argument(
        "--hosts-only",
        action="store_true",
        help="only the hosts, comma-separated, ready to paste into --hosts",
    )
    p.add_argument(
        "--format",
        choices=export.FORMATS,
        default=None,
        help="every host task shown as CSV or JSON lines",
    )
    p.add_argument("--wait-timeout", type=float, default=None,
                   help="give up waiting after this many seconds (exit 3)")  # fmt: skip
    p.add_argument("--stream", action="store_true",
                   help="with --wait: each host's output as it comes, on a pipe too")  # fmt: skip


def _target_arguments(p) -> None:
    p.add_argument(
        "--hosts",
        nargs="+",
        default=[],
        metavar="HOST",
        help="IP addresses or hostnames of known hosts (space- or comma-separated)",
    )
    p.add_argument(
        "--group",
        dest="groups",
        action="append",
        default=[],
        metavar="NAME",
        help="every host of a named group (repeatable)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="EXPR",
        help="filter on stored facts, e.g. os=debian (repeatable, ANDed)",
    )
    p.add_argument("--timeout", type=int, help="seconds before the work is stopped on a host")
    p.add_argument("--reach-timeout", type=int, help="seconds an agent has to pick it up")
    p.add_argument("--batch", metavar="N|P%", help="hosts at a time (rolling)")
    p.add_argument("--max-failures", metavar="M|P%", help="stop past this many failures")
    p.add_argument("--canary", type=int, metavar="N", help="the first N hosts alone")
    p.add_argument("--all", action="store_true", help="every host you may act on")
    p.add_argument("--online-only", action="store_true",
                   help="leave out the targets whose agent is not online now")  # fmt: skip


def _confirm_argument(p) -> None:
    p.add_argument(
        "--yes",
        dest="confirm",
        action="store_true",
        help="confirm a job that reaches more hosts than allowed unconfirmed",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmdb", description="The fleet CMDB from anywhere: its REST API, with your token "
        "(`cmdb login URL`; or CMDB_URL and CMDB_TOKEN).")  # fmt: skip
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    p = sub.add_parser("login", help="get a token from the server and keep it")
    p.add_argument("url", help="the server, e.g. https://cmdb.example.com")
    p.add_argument(
        "--token",
        metavar="-",
        help="an API token you have, read from stdin "
        "(`--token -`; asked for on a terminal), else username and password",
    )
    p.add_argument("--username", help="your username (asked if not given)")
    p = sub.add_parser("run", help="run a shell command on hosts; prints the job id at once")
    p.add_argument("command", help="shell command, run with /bin/sh -c on each host")
    _target_arguments(p)
    _confirm_argument(p)
    p.add_argument("--wait", action="store_true", help="then show the results, as check")
    _result_arguments(p)
    p = sub.add_parser("check", help="a job (or host task) by id; exit 0 ok, 1 failures, "
                       "2 unknown, 3 not finished")  # fmt: skip
    p.add_argument("id", help="job id (printed by run) or a per-host task id")
    p.add_argument("--wait", action="store_true", help="until every host has finished")
    p.add_argument("--json", action="store_true", help="the API's document, every host task")
    _result_arguments(p)
    p = sub.add_parser("jobs", help="recent jobs, newest first, with short ids")
    p.add_argument(
        "--state",
        dest="states",
        action="append",
        default=[],
        choices=STATES,
        metavar="STATE",
        help="only jobs with a host in this state (repeatable)",
    )
    p.add_argument("--failed", action="store_true", help="only jobs with a host not ok")
    p.add_argument("--user", help="only jobs this user asked for")
    p.add_argument("--since", help="only jobs since: an age (30m, 6h, 2d) or a date")
    p.add_argument("--limit", type=int, default=20, help="at most this many (20)")
    p.add_argument("--kind", choices=["command", "collect", "push", "fetch"])
    p = sub.add_parser("hosts", help="list, add or remove hosts")
    hosts = p.add_subparsers(dest="action", metavar="ACTION")
    hosts.add_parser("list", help="list hosts (the default)")
    add = hosts.add_parser("add", help="add hosts by IP")
    add.add_argument("ips", nargs="+", metavar="IP")
    add.add_argument("--hostname", default="", help="hostname (with a single IP)")
    remove = hosts.add_parser("remove", help="remove hosts by IP (their job history stays)")
    remove.add_argument("ips", nargs="+", metavar="IP")
    p = sub.add_parser("cancel", help="cancel the unfinished host tasks of a job")
    p.add_argument("id", help="job id or per-host task id")
    p = sub.add_parser("rerun", help="the same job again, on its hosts (or the failed ones)")
    p.add_argument("id", help="job id")
    p.add_argument("--failed", action="store_true", help="only the hosts that did not end ok")
    p.add_argument(
        "--state",
        dest="states",
        action="append",
        default=[],
        choices=STATES,
        metavar="STATE",
        help="only the hosts that ended in this state (repeatable)",
    )
    p.add_argument("--online-only", action="store_true",
                   help="leave out the hosts whose agent is not online now")  # fmt: skip
    _confirm_argument(p)
    p = sub.add_parser("completion", help="print a shell completion script")
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser


COMMANDS = {"run": cmd_run, "check": cmd_check, "jobs": cmd_jobs, "hosts": cmd_hosts,
            "cancel": cmd_cancel, "rerun": cmd_rerun}  # fmt: skip
LOCAL = {"login": cmd_login, "completion": cmd_completion}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.command_name
    if name is None:
        parser.print_help()
        return EXIT_INVALID
    try:
        if name in LOCAL:
            return LOCAL[name](args)
        settings = config.load()
        return COMMANDS[name](args, Client(settings.url, settings.token))
    except Failure as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.code
    except config.ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_INVALID
    except Unreachable as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_UNAVAILABLE
    except APIError as exc:
        said = str(exc) if exc.status == 401 else "\n".join(exc.problems)
        sys.stderr.write(said + "\n")
        return EXIT_UNAVAILABLE if exc.status >= 500 else EXIT_INVALID
    except KeyboardInterrupt:
        return 130


def run() -> None:
    sys.exit(main())
