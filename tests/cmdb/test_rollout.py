"""cmdb.jobs.rollout: what a request gives, its problems, and what it resolves to (pure)."""

import pytest

from cmdb.jobs import rollout
from cmdb.jobs.rollout import Rollout


def numbers(params: dict, total: int) -> list[int]:
    return [rollout.batch_of(params, i, total) for i in range(total)]


def test_a_batch_percentage_rounds_up_to_at_least_one_host():
    assert Rollout(batch="10%").params(30)["batch"] == 3
    assert Rollout(batch="10%").params(25)["batch"] == 3  # 2.5, up
    assert Rollout(batch="1%").params(5)["batch"] == 1  # 0.05, never nothing
    assert Rollout(batch="2.5%").params(200)["batch"] == 5
    assert Rollout(batch="100%").params(7)["batch"] == 7


def test_a_failure_percentage_rounds_down_towards_stopping():
    assert Rollout(batch=1, max_failures="10%").params(25)["max_failures"] == 2  # 2.5
    assert Rollout(batch=1, max_failures="10%").params(9)["max_failures"] == 0
    assert Rollout(batch=1, max_failures="0%").params(50)["max_failures"] == 0
    assert Rollout(batch=1, max_failures=3).params(50)["max_failures"] == 3


def test_the_params_keep_what_was_given_beside_the_resolved_numbers():
    params = Rollout(batch="10%", max_failures="10%", canary="2").params(30)

    assert params == {"batch": 3, "max_failures": 3, "canary": 2,
                      "rollout": {"batch": "10%", "max_failures": "10%", "canary": 2}}  # fmt: skip
    assert rollout.describe(params) == (
        "canary 2 hosts, then batch 10% (3 hosts), max failures 10% (3 hosts)"
    )
    assert rollout.summary(params) == {"canary": 2, "batch": {"given": "10%", "hosts": 3},
                                       "max_failures": {"given": "10%", "hosts": 3}}  # fmt: skip


def test_the_canary_is_batch_0_then_batches_follow_and_without_a_batch_the_rest_goes_at_once():
    assert numbers(Rollout(batch=2).params(5), 5) == [0, 0, 1, 1, 2]
    assert numbers(Rollout(batch=2, canary=1).params(6), 6) == [0, 1, 1, 2, 2, 3]
    alone = Rollout(canary=2).params(5)
    assert numbers(alone, 5) == [0, 0, 1, 1, 1]
    assert rollout.describe(alone) == "canary 2 hosts, then the rest at once"
    assert numbers(Rollout(canary=9).params(3), 3) == [0, 0, 0]
    assert Rollout().params(5) == {}
    assert numbers({}, 3) == [0, 0, 0]


def test_numbers_above_the_host_count_are_kept_as_given_and_resolved_to_it():
    params = Rollout(batch=10**30, max_failures=10**30, canary=1).params(4)
    assert (params["batch"], params["max_failures"]) == (3, 4)
    assert params["rollout"]["batch"] == str(10**30)


@pytest.mark.parametrize(
    ("given", "field"),
    [(Rollout(batch=0), "batch"), (Rollout(batch="0%"), "batch"), (Rollout(batch=-2), "batch"),
     (Rollout(batch="101%"), "batch"), (Rollout(batch="ten"), "batch"),
     (Rollout(batch=True), "batch"), (Rollout(batch=2.5), "batch"), (Rollout(batch="-1"), "batch"),
     (Rollout(batch=1, max_failures=-1), "max_failures"),
     (Rollout(batch=1, max_failures="100.5%"), "max_failures"),
     (Rollout(batch=1, max_failures="x%"), "max_failures"),
     (Rollout(canary=0), "canary"), (Rollout(canary="5%"), "canary"),
     (Rollout(canary="one"), "canary")],
)  # fmt: skip
def test_a_wrong_value_is_one_problem_of_its_own_field_quoting_it(given, field):
    problems = given.problems()

    assert [name for name, _ in problems] == [field]
    assert repr(getattr(given, field)) in problems[0][1]


def test_max_failures_without_a_batch_or_a_canary_would_stop_nothing_and_is_refused():
    assert Rollout(max_failures=1).problems() == [("max_failures", rollout.E_NOTHING_TO_STOP)]
    assert Rollout(max_failures=1, canary=1).problems() == []
    assert Rollout(batch=" 5 ", max_failures=" 10 % ").problems() == []


def test_a_job_from_before_the_given_values_were_kept_says_its_numbers():
    old = {"batch": 2, "max_failures": 0, "agent": {}}

    assert rollout.describe(old) == "batch 2, max failures 0"
    assert rollout.given(old, "max_failures") == "0"
    assert rollout.describe({"agent": {}}) == "" and rollout.summary({}) is None
