"""The fault suite's short run (`python -m bench.faults --short`, issue 14) in `make test`.

One run of every scenario against processes of its own (its own Redis, central worker and
agents on 127.14.x.y, under a temporary folder), then one test per scenario asserting the
zeros `make faults` gates on: nothing lost, twice, late, stuck or wrong.
"""

import json
import os
import subprocess
import sys

import pytest

from bench.faults.tally import GATE
from tests.support.fleet import ROOT

# The whole short run happens in the first test's setup: a few minutes, not the default 180 s.
pytestmark = [pytest.mark.fleet, pytest.mark.timeout(420)]


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("faults") / "faults.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--short", "--out", str(out)],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert out.exists(), proc.stdout + proc.stderr[-4000:]
    return json.loads(out.read_text())


def measured(faults: dict, name: str) -> dict:
    found = faults["scenarios"][name]
    if "skipped" in found:
        pytest.skip(found["skipped"])
    assert found["runs"] >= 1 and not found.get("error"), json.dumps(found, indent=1)
    return found


def assert_zeros(found: dict) -> None:
    counted = {k: found[k] for k in GATE if found[k]}
    assert not counted, json.dumps(found, indent=1)


def test_a_central_worker_killed_mid_burst_loses_no_result(faults):
    assert_zeros(measured(faults, "central_kill"))


def test_an_agent_back_after_the_reach_deadline_runs_nothing(faults):
    assert_zeros(measured(faults, "agent_late"))


def test_an_agent_back_after_the_sweep_leaves_the_task_unreachable(faults):
    found = measured(faults, "agent_back_after_sweep")
    assert_zeros(found)
    assert found["ran"] == 0


def test_a_frozen_agents_late_result_is_kept_without_changing_the_verdict(faults):
    # Frozen 12 s in the short run: found lost within it (7 s), then the thawed agent's result
    # is kept beside the verdict, which stays (the scenario counts a lost turned ok as wrong).
    assert_zeros(measured(faults, "agent_frozen"))


def test_a_killed_agents_task_is_lost_within_10_s_and_its_tree_killed(faults):
    found = measured(faults, "agent_kill")
    assert_zeros(found)
    # A hang check here; `make faults` reports the figure (5-7 s on these machines, goal 10).
    assert faults["agent_lost_s"] is not None and faults["agent_lost_s"] < 20
    assert not any(found["tree_left_after_restart"]), "the killed command's tree lives on"


def test_a_broker_restart_ends_every_task_truly(faults):
    found = measured(faults, "redis_restart")
    assert_zeros(found)
    assert faults["redis_restart_run_ok_s"] is not None


def test_a_frozen_broker_fails_dispatch_fast_and_job_and_tasks_agree(faults):
    found = measured(faults, "frozen_broker_dispatch")
    assert_zeros(found)
    assert found["run_exit_code"] == [3]


def test_a_full_spool_is_reported_as_incomplete_output(faults):
    assert_zeros(measured(faults, "spool_full"))
