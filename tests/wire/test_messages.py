"""wire.messages: both sides build and read messages only through these, so they must refuse
what does not follow the contract, with a reason."""

import json

import pytest

from wire import names
from wire.messages import (
    SPECS,
    VERSION,
    CollectSpec,
    CommandSpec,
    FetchSpec,
    Outcome,
    PushSpec,
    Registration,
    Report,
    Started,
    Stream,
    VersionMismatch,
    WireError,
)

COMMON = {"job": "j-1", "host": "127.0.1.1", "timeout": 30, "reply_queue": "q"}
EXAMPLES = [
    CommandSpec(**COMMON, command="df -h"),
    CollectSpec(**COMMON, plugins={"cpu": "collectors.cpu"}),
    PushSpec(**COMMON, manifest={"sha256": "0" * 64}, dest="/etc/x", mode=0o644, tree=False),
    FetchSpec(**COMMON, path="/var/log/syslog"),
    Started(task_id="t-1", host="127.0.1.1", agent="agent@127.0.1.1", agent_pid=7, started_at=1.5),
    Report(
        task_id="t-1", outcome=Outcome.OK, exit_code=0, stdout=Stream.text("hi\n"), duration=0.1
    ),
    Registration(ip="127.0.1.1", hostname="h", agent="agent@127.0.1.1", agent_pid=7),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_survives_json_and_carries_the_version(message):
    data = json.loads(json.dumps(message.to_wire()))

    assert data["v"] == VERSION
    assert type(message).from_wire(data) == message


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_another_version_is_refused_by_name(message):
    for version in (None, VERSION + 1, "1"):
        data = {**message.to_wire(), "v": version}
        if version is None:
            del data["v"]
        with pytest.raises(VersionMismatch, match=f"speaks version {VERSION}"):
            type(message).from_wire(data)


@pytest.mark.parametrize(
    "data, why",
    [
        ({**CommandSpec(**COMMON, command="x").to_wire(), "timeout": "30"}, "'timeout' is '30'"),
        ({**CommandSpec(**COMMON, command="x").to_wire(), "timeout": True}, "'timeout' is True"),
        ({**CommandSpec(**COMMON, command="x").to_wire(), "command": "  "}, "empty command"),
        (
            {k: v for k, v in CommandSpec(**COMMON, command="x").to_wire().items() if k != "host"},
            "has no 'host'",
        ),
        ("not a dict", "not an object"),
    ],
)
def test_a_spec_of_the_wrong_shape_is_refused_with_the_reason(data, why):
    with pytest.raises(WireError, match=why):
        CommandSpec.from_wire(data)


def test_a_report_with_a_malformed_stream_or_time_is_refused():
    good = Report(task_id="t", outcome=Outcome.OK).to_wire()
    for bad in ({"stdout": 7}, {"stdout": {"head": "x"}}, {"started_at": "not a time"},
                {"task_id": None}, {"duplicate": "yes"}, {"duration": float("nan")},
                {"started_at": float("inf")}, {"exit_code": 10**30}):  # fmt: skip
        with pytest.raises(WireError):
            Report.from_wire({**good, **bad})


def test_fields_a_peer_adds_are_ignored_not_fatal():
    data = {**Report(task_id="t", outcome=Outcome.OK).to_wire(), "new_field": 1}
    assert Report.from_wire(data) == Report(task_id="t", outcome=Outcome.OK)


def test_each_agent_task_has_its_spec():
    assert set(SPECS) == set(names.AGENT_TASKS)
    assert all(task == spec.TASK for task, spec in SPECS.items())
