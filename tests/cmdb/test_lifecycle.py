"""cmdb.jobs.lifecycle: every state change of a host task is a move the table allows, from the
state its caller saw; anything else is refused, logged, and changes nothing."""

import ast
import itertools
import logging
import uuid
from pathlib import Path

import pytest
from django_celery_results.models import TaskResult

from cmdb.jobs import documents, lifecycle, results
from cmdb.jobs import report as report_text
from cmdb.jobs.choices import AGENT_TASK, TRANSITIONS, JobKindChoices
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask, Job
from tests.support.factories import from_host
from wire.messages import VERSION, Outcome, Report, Started, Stream

ROOT = Path(__file__).resolve().parents[2]
PAIRS = list(itertools.product(State.values, repeat=2))


def task_in(state: str, kind: str = JobKindChoices.COMMAND) -> HostTask:
    job = Job.objects.create(kind=kind, command=kind, timeout=30, reach_timeout=30)
    return HostTask.objects.create(job=job, ip="127.0.1.80", task_id=str(uuid.uuid4()),
                                   state=state)  # fmt: skip


def test_the_table_names_every_state_and_only_terminal_ones_lack_a_way_out():
    assert set(TRANSITIONS) == set(State.values)
    for state, targets in TRANSITIONS.items():
        assert targets <= set(State.values)
        if state in State.active():
            assert targets & State.terminal(), f"{state} can never end"
    # What the host reported is final: nothing the server infers or hears later changes it.
    # So is "unreachable" (never started: the server holds its claim).
    for final in (State.OK, State.FAILED, State.TIMEOUT, State.ERROR, State.UNREACHABLE):
        assert TRANSITIONS[final] == frozenset()
    # "lost" only by the server's own storing of a file it had given up on.
    assert TRANSITIONS[State.LOST] == {State.OK, State.ERROR}
    assert State.LOST not in lifecycle.REPORT_FROM | lifecycle.BEGIN_FROM
    assert State.PENDING not in set().union(*TRANSITIONS.values())  # nothing goes back


@pytest.mark.parametrize("old, new", PAIRS)
def test_every_pair_is_a_move_exactly_when_the_table_says(old, new, caplog):
    task = HostTask(task_id="t-pair", state=old)

    with caplog.at_level(logging.INFO, logger="cmdb.jobs.lifecycle"):
        moved = lifecycle.move(task, new)

    assert moved is (new in TRANSITIONS[old])
    assert task.state == (new if moved else old)
    refused = [r.getMessage() for r in caplog.records]
    assert refused == ([] if moved else [f"host task t-pair: {old} -> {new} refused "
                                         f"({lifecycle.R_ILLEGAL})"])  # fmt: skip


@pytest.mark.django_db
def test_every_pair_through_the_database_with_the_state_its_caller_saw():
    """conclude, as the monitor, cancel and dispatch use it, for every (from, to)."""
    tasks = {(old, new): task_in(old) for old, new in PAIRS}

    for (old, new), task in tasks.items():
        lifecycle.conclude([task.pk], new, "judged", only_from={old})

    for (old, new), task in tasks.items():
        task.refresh_from_db()
        allowed = new in TRANSITIONS[old]
        assert task.state == (new if allowed else old), (old, new)
        assert (task.error == "judged") is allowed
        assert TaskResult.objects.filter(task_id=task.task_id).exists() is allowed


@pytest.mark.django_db
@pytest.mark.parametrize(
    "saw, now, verdict",
    [
        (State.PENDING, State.RUNNING, State.UNREACHABLE),  # its agent picked it up meanwhile
        (State.PENDING, State.OK, State.UNREACHABLE),  # ... and already reported
        (State.RUNNING, State.STORING, State.LOST),  # a fetch whose file arrived meanwhile
        (State.PENDING, State.RUNNING, State.CANCELLED),  # a cancel racing with the start
        (State.STORING, State.OK, State.CANCELLED),  # stored before the cancel got there
    ],
)
def test_a_verdict_on_a_task_that_moved_on_meanwhile_leaves_it_where_it_went(saw, now, verdict):
    task = task_in(now)

    assert lifecycle.conclude([task.pk], verdict, "too late", only_from={saw}) == []

    task.refresh_from_db()
    assert (task.state, task.error) == (now, "")


@pytest.mark.django_db
def test_a_report_moves_a_task_only_from_where_a_report_may_come():
    report = Report(task_id="", outcome=Outcome.OK, exit_code=0)
    for state in State.values:
        task = task_in(state)
        moved = lifecycle.report(task, report)
        late = state in State.inferred()  # kept beside the verdict, which stays
        moves = state in lifecycle.REPORT_FROM and State.OK in TRANSITIONS[state]
        assert moved is (late or moves)
    # The host's part of a fetch is done once the server stores its file: a late (or
    # forged) report must not end a storing task.
    storing = task_in(State.STORING, JobKindChoices.FETCH)
    assert not lifecycle.report(storing, report) and storing.state == State.STORING


@pytest.mark.django_db
def test_a_started_notice_after_the_result_does_not_move_it_back():
    task = task_in(State.PENDING)
    results.store_batch(
        [], [from_host(task, Report(task_id=task.task_id, outcome=Outcome.OK, exit_code=0))]
    )
    results.store_batch([from_host(task, Started(task_id=task.task_id, agent="agent@x"))], [])

    task.refresh_from_db()
    assert task.state == State.OK


@pytest.mark.django_db
@pytest.mark.parametrize("kind", JobKindChoices.values)
def test_the_task_result_is_named_after_what_the_host_ran(kind):
    task = task_in(State.PENDING, kind)

    results.store_batch(
        [], [from_host(task, Report(task_id=task.task_id, outcome=Outcome.ERROR, error="x"))]
    )

    assert TaskResult.objects.get(task_id=task.task_id).task_name == AGENT_TASK[kind]


@pytest.mark.django_db
def test_a_report_in_another_version_of_the_contract_ends_the_task_saying_so():
    task = task_in(State.RUNNING)
    old = {
        **Report(task_id=task.task_id, outcome=Outcome.OK, exit_code=0).to_wire(),
        "v": VERSION + 1,
    }

    results.store_batch([], [from_host(task, old)])

    task.refresh_from_db()
    assert task.state == State.ERROR
    assert f"wire version {VERSION + 1}" in task.error and "upgrade" in task.error


def _state_writes(path: Path) -> list[str]:
    """Places in ``path`` that set a host task's state: ``x.state = ...``, ``state=`` in an
    update(), or ``setattr(x, "state", ...)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and t.attr == "state":
                        found.append(f"{path}:{node.lineno}")
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", "")
        updates = name == "update" and any(k.arg == "state" for k in node.keywords)
        sets = name == "setattr" and len(node.args) > 1 and getattr(node.args[1], "value", None)
        if updates or sets == "state":
            found.append(f"{path}:{node.lineno}")
    return found


def test_only_the_lifecycle_sets_a_host_tasks_state():
    server = [p for p in (ROOT / "cmdb").rglob("*.py") if "migrations" not in p.parts]
    writes = [w for p in server for w in _state_writes(p)]

    assert writes and all(w.startswith(str(ROOT / "cmdb/jobs/lifecycle.py")) for w in writes), (
        writes
    )


@pytest.mark.django_db
@pytest.mark.parametrize("state", [State.RUNNING, State.CANCELLED])
def test_what_cannot_be_read_ends_nothing_it_must_not(state):
    """An unreadable notice, a refused duplicate, or a report for a cancelled task: no
    conclusion from them (the host may well be running it; the operator's cancel stands)."""
    task = task_in(state)
    old = {"v": VERSION + 1, "task_id": task.task_id}

    results.store_batch(
        [from_host(task, {**old, "agent": "agent@x"})],
        [from_host(task, {**old, "outcome": "ok", "duplicate": True})],
    )
    if state == State.CANCELLED:
        results.store_batch([], [from_host(task, {**old, "outcome": "ok"})])

    task.refresh_from_db()
    assert task.state == state and task.error == ""


@pytest.mark.django_db
def test_a_late_agents_refusal_of_an_unreachable_task_is_no_cancel():
    """The sweep ends a task unreachable and marks it cancelled, so that a late agent will not
    run it; the agent's refusal ("cancelled before it started") must not turn it into a cancel
    nobody made."""
    task = task_in(State.UNREACHABLE)
    refusal = Report(task_id=task.task_id, outcome=Outcome.CANCELLED,
                     error="cancelled before it started")  # fmt: skip

    assert not lifecycle.report(task, refusal) and task.state == State.UNREACHABLE


@pytest.mark.django_db
@pytest.mark.parametrize("outcome", [Outcome.OK, Outcome.CANCELLED, Outcome.ERROR])
def test_nothing_an_agent_says_turns_an_unreachable_task_into_something_else(outcome):
    """A refusal (an error, a cancel) is ignored; a result only a run has (the broker lost the
    claim) is kept beside the verdict, as after lost."""
    task = task_in(State.UNREACHABLE)
    refusal = Report(task_id=task.task_id, outcome=outcome)
    results.store_batch([from_host(task, Started(task_id=task.task_id, agent="agent@x"))],
                        [from_host(task, refusal)])  # fmt: skip
    task.refresh_from_db()
    assert task.state == State.UNREACHABLE
    assert task.late_state == (State.OK if outcome == Outcome.OK else "")


@pytest.mark.django_db
def test_a_result_after_lost_is_kept_beside_the_verdict_and_only_the_first():
    task = task_in(State.LOST)
    HostTask.objects.filter(pk=task.pk).update(error="agent a@x stopped sending heartbeats")
    task.refresh_from_db()
    verdict_at = task.finished_at
    late = Report(task_id=task.task_id, outcome=Outcome.OK, exit_code=0, agent="a@x",
                  stdout=Stream.text("thawed\n"), duration=31.0)  # fmt: skip
    results.store_batch([from_host(task, Started(task_id=task.task_id, agent="a@x"))],
                        [from_host(task, late)])  # fmt: skip
    task.refresh_from_db()
    assert (task.state, task.late_state, task.exit_code) == (State.LOST, State.OK, 0)
    assert task.stdout_head == "thawed\n" and task.late_at is not None
    assert task.error == "agent a@x stopped sending heartbeats"
    assert task.finished_at == verdict_at
    # Shown, in check_task and the API, beside the verdict.
    shown = report_text.format_task(task)
    assert "(lost, then a late result: ok, exit 0" in shown
    assert "[late result] ok, received" in shown
    assert documents.late_result(task)["state"] == State.OK
    # A second report (a duplicate delivery, a forgery replayed) changes nothing.
    results.store_batch([], [from_host(task, {**late.to_wire(), "exit_code": 3})])
    task.refresh_from_db()
    assert (task.late_state, task.exit_code) == (State.OK, 0)
