"""Counting what happened against what the server says: one Tally per scenario, and the table."""

import statistics
from dataclasses import dataclass

from bench.faults.harness import LATE_SLACK, FaultFleet, Marks, Watch
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask

COUNTS = ("runs", "tasks", "ran", "stored_right", "lost", "twice", "late", "stuck", "wrong")
#: Counts that must be zero: `make faults` exits non-zero otherwise. ``wrong`` (a state that is
#: not true: a command that never ran called ok or cancelled, a terminal state that turned into
#: another) is gated too: decision 10 of the design, "a terminal state is final and true".
GATE = ("lost", "twice", "late", "stuck", "wrong")
#: Words a task may use to say its output is incomplete (whatever field the fix adds).
INCOMPLETE_WORDS = ("incomplete", "spool", "no space", "disk full")


@dataclass(frozen=True)
class Sent:
    """One host task the suite dispatched, and what its command was to do."""

    task_id: str
    ip: str
    token: str
    code: int = 0
    #: The command's true stdout size, where a scenario checks it (spool_full).
    stdout_bytes: int | None = None


def _late_fields(task: HostTask) -> dict:
    """Whatever the server keeps of a result that came after its task ended (the fix adds
    fields for it; today there are none)."""
    return {f.name: getattr(task, f.name) for f in HostTask._meta.fields
            if "late" in f.name and getattr(task, f.name) not in (None, "", {}, [])}  # fmt: skip


def _says_incomplete(task: HostTask) -> bool:
    flags = [getattr(task, f.name) for f in HostTask._meta.fields if "incomplete" in f.name]
    if any(flags):
        return True
    text = f"{task.error} {task.stdout_tail} {task.stderr_head}".lower()
    return any(word in text for word in INCOMPLETE_WORDS)


def _terminal_path(states: list[str]) -> list[str]:
    path: list[str] = []
    for state in states:
        if state in State.terminal() and (not path or path[-1] != state):
            path.append(state)
    return path


class Tally:
    def __init__(self, name: str):
        self.name = name
        self.counts = dict.fromkeys(COUNTS, 0)
        self.figures: dict[str, list] = {}
        self.notes: list[str] = []
        self.skipped: str | None = None
        #: Task ids of the commands that ran and were not stored right.
        self.lost_ids: list[str] = []
        self.error: str | None = None

    def figure(self, key: str, value) -> None:
        self.figures.setdefault(key, []).append(value)

    def note(self, text: str) -> None:
        if text not in self.notes and len(self.notes) < 30:
            self.notes.append(text)

    def judge(self, fleet: FaultFleet, watch: Watch, sent: list[Sent],
              killed_ok=frozenset({State.LOST}),
              unrun_ok=frozenset({State.UNREACHABLE})) -> None:  # fmt: skip
        """Count ``sent`` against the markers: ``killed_ok`` are the true end states of a
        command that started and never ended (its agent died), ``unrun_ok`` of one that never
        started."""
        rows = {
            t.task_id: t for t in HostTask.objects.filter(task_id__in=[s.task_id for s in sent])
        }
        c = self.counts
        for s in sent:
            task = rows.get(s.task_id)
            c["tasks"] += 1
            if task is None:
                c["stuck"] += 1
                self.note(f"{s.task_id}: no host task row")
                continue
            marks = fleet.marks(s.token).get(s.ip, Marks())
            terminal = task.state in State.terminal()
            if not terminal:
                c["stuck"] += 1
                self.note(f"{s.ip} {s.task_id[:8]}: still {task.state}")
            path = _terminal_path(watch.states(s.task_id))
            if len(path) > 1:
                c["wrong"] += 1
                self.figure("terminal_changes", " -> ".join(path))
            late = _late_fields(task)
            if late:
                self.figure("late_result_fields", sorted(late))
            if not marks.starts:
                if terminal and task.state not in unrun_ok:
                    c["wrong"] += 1
                    self.note(f"{s.ip} {s.task_id[:8]}: never ran, ended {task.state}: "
                              f"{task.error[:120]}")  # fmt: skip
                continue
            c["ran"] += 1
            if len(marks.starts) > 1:
                c["twice"] += 1
            started = min(marks.starts)
            ended_seen = watch.first(s.task_id, State.terminal())
            deadline = task.reach_deadline.timestamp() if task.reach_deadline else None
            if (ended_seen is not None and started > ended_seen) or (
                deadline is not None and started > deadline + LATE_SLACK
            ):
                c["late"] += 1
                self.figure("late_start_s", round(started - deadline, 2) if deadline else None)
            if not terminal:
                continue
            if marks.ends:
                want = State.OK if s.code == 0 else State.FAILED
                right = task.state == want and task.exit_code == s.code
                if s.stdout_bytes is not None:
                    # All of it (its true size), or a task that says it is not.
                    self.figure("stdout_bytes_stored", task.stdout_bytes)
                    if right and task.stdout_bytes != s.stdout_bytes:
                        right = _says_incomplete(task)
                        self.figure("says_incomplete", right)
                else:
                    right = right and s.token in task.stdout_head + task.stdout_tail
                if not right and late and task.state in State.inferred():
                    right = True  # kept beside the verdict, as the fix promises
                    self.figure("late_result_kept", True)
            else:
                right = task.state in killed_ok
            if right:
                c["stored_right"] += 1
            else:
                c["lost"] += 1
                self.lost_ids.append(s.task_id)
                self.note(f"{s.ip} {s.task_id[:8]}: ran (exit {s.code}"
                          f"{'' if marks.ends else ', never ended'}), stored {task.state}"
                          f" exit {task.exit_code}: {task.error[:120]}")  # fmt: skip

    def failed(self) -> bool:
        return bool(self.error) or any(self.counts[k] for k in GATE)

    def document(self) -> dict:
        if self.skipped:
            return {"skipped": self.skipped}
        doc = dict(self.counts)
        for key, values in self.figures.items():
            doc[key] = values
            numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if numbers and key.endswith("_s"):
                doc[f"{key}_median"] = round(statistics.median(numbers), 2)
                doc[f"{key}_max"] = round(max(numbers), 2)
        if self.notes:
            doc["notes"] = self.notes
        if self.error:
            doc["error"] = self.error
        return doc


def median(values) -> float | None:
    numbers = [v for v in values or [] if isinstance(v, int | float)]
    return round(statistics.median(numbers), 2) if numbers else None


#: The figure each scenario's table row shows, beside the counts.
SHOWN = {
    "central_kill": ("stored_when_killed", "{}"),
    "agent_late": ("agent_back_after_deadline_s", "back +{} s"),
    "agent_back_after_sweep": ("states_seen", "{}"),
    "agent_frozen": ("lost_after_s", "lost after {} s"),
    "agent_kill": ("lost_after_s", "lost after {} s"),
    "redis_restart": ("run_ok_after_s", "run ok after {} s"),
    "frozen_broker_dispatch": ("run_exit_s", "run exited after {} s"),
    "spool_full": ("stdout_bytes_stored", "stored {} bytes"),
}


def table(tallies: list[Tally]) -> str:
    head = ("scenario", *COUNTS[:-1], "wrong", "figures")
    rows = []
    for t in tallies:
        if t.skipped:
            rows.append((t.name, f"skipped: {t.skipped}"))
            continue
        key, fmt = SHOWN.get(t.name, ("", "{}"))
        values = t.figures.get(key, [])
        shown = fmt.format(", ".join(str(v) for v in values[:6])) if values else ""
        if t.error:
            shown = f"ERROR {t.error[:60]} {shown}"
        rows.append((t.name, *(str(t.counts[k]) for k in COUNTS), shown))
    counted = [r for r in (head, *rows) if len(r) == len(head)]
    widths = [max(len(str(r[i])) for r in counted) for i in range(len(head) - 1)]
    lines = []
    for r in (head, *rows):
        if len(r) == 2:
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
            continue
        counts = zip(r[1:-1], widths[1:], strict=True)
        cells = [f"{r[0]:<{widths[0]}}", *(f"{c:>{w}}" for c, w in counts), r[-1]]
        lines.append("  ".join(cells))
    return "\n".join(lines)
