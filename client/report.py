"""A job as a terminal shows it, from the API's job document and host task documents (or
dicts of the same keys): the tally, then the hosts grouped by outcome (or one block each)."""

from collections.abc import Iterable, Mapping, Sequence

from client.grouping import Group, group, ip_order, ip_ranges, state_order, summary_line
from client.text import row_ip, row_output

#: Shown instead of a host's output to a reader without jobs.view_output.
E_OUTPUT_HIDDEN = "[output not shown: reading it takes jobs.view_output]\n"
#: What `--failed` means: every end but ok (cancelled too: those hosts never finished it).
NOT_OK = ("failed", "timeout", "cancelled", "unreachable", "lost", "error")


def _hosts(n: int) -> str:
    return f"{n} host{'s' if n != 1 else ''}"


def describe_rolling(rolling: Mapping | None) -> str:
    """The document's "rolling" in one line: "canary 2 hosts, then batch 10% (3 hosts), max
    failures 1"; "" for a job sent at once."""
    if not rolling:
        return ""
    parts = []
    for name, label in (("batch", "batch"), ("max_failures", "max failures")):
        value = rolling.get(name)
        if value is not None:
            percent = "%" in value["given"]
            parts.append(f"{label} {value['given']}" + f" ({_hosts(value['hosts'])})" * percent)
    if rolling.get("batch") is None:
        parts.insert(0, "the rest at once")
    canary = f"canary {_hosts(rolling['canary'])}, then " if rolling.get("canary") else ""
    return canary + ", ".join(parts)


def _verdict(row: Mapping, duration: bool = True) -> str:
    parts = [row.get("state") or ""]
    late = row.get("late")
    if late:
        parts.append(f"then a late result: {late.get('state')}")
    if row.get("exit_code") is not None:
        parts.append(f"exit {row['exit_code']}")
    if duration and row.get("duration") is not None:
        parts.append(f"{row['duration']:.2f} s")
    return ", ".join(parts)


def host_header(row: Mapping) -> str:
    return f"from host {row_ip(row)}  ({_verdict(row)})\n"


def format_host(row: Mapping, output: bool = True) -> str:
    """One host's block; ``output``: its stdout and stderr (else a line says they are not
    shown, as to a reader without jobs.view_output)."""
    if not output:
        shown = {k: v for k, v in row.items() if k not in ("stdout", "stderr")}
        return host_header(row) + row_output(shown) + E_OUTPUT_HIDDEN
    return host_header(row) + row_output(row)


def format_group(found: Group, first: Mapping, output: bool = True) -> str:
    """A group's block: a group of one is that host's block (its duration too)."""
    if len(found.hosts) == 1:
        return format_host(first, output)
    shown = {"state": found.state, "exit_code": found.exit_code, "late": first.get("late")}
    text = f"from {found.label}  ({_verdict(shown, duration=False)})\n" + found.output
    return text + ("" if output else E_OUTPUT_HIDDEN)


def format_rows(rows: Iterable[Mapping], grouped: bool = True, output: bool = True) -> str:
    rows = list(rows)
    if not grouped:
        ordered = sorted(rows, key=lambda r: ip_order(row_ip(r)))
        return "".join(format_host(r, output) for r in ordered)
    by_ip = {row_ip(r): r for r in rows}
    if not output:  # what groups them is then only the state, the exit code and the error
        rows = [{k: v for k, v in r.items() if k not in ("stdout", "stderr")} for r in rows]
    return "".join(format_group(g, by_ip[g.hosts[0]], output) for g in group(rows))


def format_job(job: Mapping | None, rows: Sequence[Mapping], hidden: int = 0,
               output: bool = True, grouped: bool = True,
               counts: Mapping[str, int] | None = None) -> str:  # fmt: skip
    """``job``: the job's document (id, command, dispatch_error, rolling), None for one host
    task; ``rows``: the host tasks shown; ``hidden``: how many others the job has (said, so
    that the count is not taken for the whole); ``counts``: the tally, when ``rows`` are only
    some of them (a filter)."""
    out = []
    if job is not None:
        n = len(rows) if counts is None else sum(counts.values())
        tally = summary_line(counts if counts is not None else _counts(rows))
        out.append(f"job {job['id']}: {job.get('command')!r} on {n} host(s): {tally}\n")
        if hidden:
            out.append(f"[not shown] {hidden} more host(s): you may not view them\n")
        if job.get("dispatch_error"):
            out.append(f"[not dispatched] {job['dispatch_error']}\n")
        if rolling := describe_rolling(job.get("rolling")):
            out.append(f"rolling: {rolling}\n")
    out.append(format_rows(rows, grouped, output))
    return "".join(out)


def _counts(rows: Iterable[Mapping]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("state") or ""] = counts.get(r.get("state") or "", 0) + 1
    return counts


def chosen(rows: Iterable[Mapping], states: Iterable[str] = ()) -> list[Mapping]:
    """The rows in one of ``states`` (all of them when none is given)."""
    wanted = set(states)
    return [r for r in rows if not wanted or r.get("state") in wanted]


def hosts_by_state(rows: Iterable[Mapping], labelled: bool = True, sep: str = ",") -> str:
    """The hosts, ready to paste into --hosts: one line per state ("failed: a,b"), or, not
    ``labelled``, one line of them all."""
    rows = list(rows)
    if not labelled:
        return sep.join(sorted((row_ip(r) for r in rows), key=ip_order)) + "\n"
    states: dict[str, list[str]] = {}
    for r in rows:
        states.setdefault(r.get("state") or "", []).append(row_ip(r))
    return "".join(f"{s}: {sep.join(sorted(states[s], key=ip_order))}\n"
                   for s in sorted(states, key=state_order))  # fmt: skip


def not_answering_lines(reach: Mapping, reach_timeout: int | None = None) -> list[str]:
    """What dispatching says of the targets that will not answer, from the API's
    ``not_answering`` ({"skipped": [...], "offline": [...], "never_seen": [...]}): a line
    for each kind there is; none when every target is online."""
    lines = []
    if skipped := reach.get("skipped"):
        lines.append(f"skipped {len(skipped)} target(s) not online (--online-only): "
                     f"{ip_ranges(skipped)}")  # fmt: skip
    timeout = f" ({reach_timeout} s" if reach_timeout is not None else " ("
    for key, why in (("offline", "offline"), ("never_seen", "never seen")):
        if ips := reach.get(key):
            lines.append(f"warning: {len(ips)} target(s) {why}, they will end unreachable after "
                         f"the reach timeout{timeout}; --online-only leaves them out): "
                         f"{ip_ranges(ips)}")  # fmt: skip
    return lines
