"""The messages of the contract, typed: what a host task's message carries (its spec), and
what comes back (the started notice, the report, an agent's registration).

Each has ``to_wire()`` (a JSON-ready dict, with the contract's version ``v``) and
``from_wire(data)``, which checks the version and every field's type and raises WireError
otherwise: both sides build and read messages only through these, so a field renamed on one
side cannot silently mean nothing on the other.

Exceptions::

    WireError            a message that does not follow the contract
    └── VersionMismatch  one from a peer that speaks another version of it
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import time
import types
import typing
from dataclasses import dataclass, field
from typing import ClassVar

from wire import names, signing

#: Raised with every change of a message's shape; both sides refuse any other.
#: 2: agents sign what they send (started notices, reports, heartbeats) with their own key.
VERSION = 2

E_NOT_OBJECT = "{what} is not an object"
E_VERSION = "{what} is in wire version {got!r}; this side speaks version {want}"
E_MISSING = "{what} has no {name!r}"
E_TYPE = "{what}: {name!r} is {value!r:.80}, not {wanted}"
E_RANGE = "{what}: {name!r} is {value!r:.80}, out of range"
#: What a database column (BIGINT, DOUBLE) holds: a number beyond it is no number a peer meant.
INT_RANGE = 2**63 - 1
E_EMPTY_COMMAND = "empty command"
#: The largest head or tail of a stream an agent captures, and the server stores: results
#: travel through the broker.
MAX_CAPTURE_BYTES = 1 << 20


class WireError(ValueError):
    """A message that does not follow the contract; the text says what is wrong."""


class VersionMismatch(WireError):
    """A message from a peer that speaks another version of the contract."""


class Outcome(enum.StrEnum):
    """How a host task ended, as the one that ran it reports it."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    ERROR = "error"
    #: Only a gateway says so (SSH, Salt): it could not reach the host, so nothing ran there
    #: (the reason says why: connection refused, timeout, authentication failed, host key
    #: changed, a salt minion that did not answer).
    UNREACHABLE = "unreachable"


class TransferOutcome(enum.StrEnum):
    """How a push or a fetch went on the host (a report's ``transfer["outcome"]``)."""

    VERIFIED = "verified"
    SKIPPED = "skipped"
    SENT = "sent"
    FAILED = "failed"

    @property
    def ok(self) -> bool:
        return self is not TransferOutcome.FAILED


def _wanted(hint) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _wanted(arg))
    return (typing.get_origin(hint) or hint,)


@functools.cache
def _schema(cls) -> tuple[tuple[str, tuple[type, ...], bool], ...]:
    """(name, accepted types, required) per field of ``cls``: worked out once per class (the
    intake reads hundreds of reports a second; get_type_hints costs more than all the rest)."""
    hints = typing.get_type_hints(cls)
    schema = []
    for f in dataclasses.fields(cls):
        wanted = _wanted(hints[f.name])
        if float in wanted:
            wanted = (*wanted, int)  # JSON has one number type
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        schema.append((f.name, wanted, required))
    return tuple(schema)


@functools.cache
def _names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _check_fields(cls, data: dict, what: str) -> dict:
    """The dataclass fields of ``cls`` from ``data``, each of its declared type; WireError if
    one is missing (and has no default) or of another type. Unknown keys are left out."""
    values = {}
    for name, wanted, required in _schema(cls):
        if name not in data:
            if required:
                raise WireError(E_MISSING.format(what=what, name=name))
            continue
        value = data[name]
        if (
            isinstance(value, bool) and bool not in wanted  # True is an int to isinstance
        ) or not isinstance(value, wanted):
            names_ = " or ".join(t.__name__ for t in wanted)
            raise WireError(E_TYPE.format(what=what, name=name, value=value, wanted=names_))
        if (isinstance(value, float) and not math.isfinite(value)) or (
            isinstance(value, int) and abs(value) > INT_RANGE
        ):
            raise WireError(E_RANGE.format(what=what, name=name, value=value))
        values[name] = value
    return values


def _check_version(data, what: str) -> dict:
    if not isinstance(data, dict):
        raise WireError(E_NOT_OBJECT.format(what=what))
    if data.get("v") != VERSION:
        raise VersionMismatch(E_VERSION.format(what=what, got=data.get("v"), want=VERSION))
    return data


class _Message:
    """to_wire / from_wire for the dataclasses below."""

    #: How an error message names this kind of message.
    WHAT: ClassVar[str] = "message"

    def to_wire(self) -> dict:
        # Not dataclasses.asdict: it deep-copies every value (a collection's facts included),
        # which was a fifth of the intake's time per report. The dict shares the message's own
        # containers: serialise it, never change it.
        return {"v": VERSION, **{name: getattr(self, name) for name in _names(type(self))}}

    @classmethod
    def from_wire(cls, data):
        return cls(**_check_fields(cls, _check_version(data, cls.WHAT), cls.WHAT))

    def signed(self, key):
        """This message with ``signature``: its sender's (wire.signing.sign_document) over all
        the rest of it and its kind, so a field changed on the way, a message made by anyone
        else, or one of another kind (a report passed off as a started notice) does not
        verify against the sender's key."""
        doc = {**self.to_wire(), "what": self.WHAT}
        return dataclasses.replace(self, signature=signing.sign_document(key, doc))

    @classmethod
    def verify(cls, key, raw: dict) -> bool:
        """True when ``raw``, as it arrived, is a message of this kind signed by ``key``."""
        return signing.verify_document(key, {**raw, "what": cls.WHAT}, raw.get("signature"))


# --- what the server sends ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Spec(_Message):
    """What every host task's message tells its agent; the signature covers all of it."""

    #: The agent task that runs this kind of spec.
    TASK: ClassVar[str] = ""
    WHAT: ClassVar[str] = "task spec"

    job: str
    host: str
    timeout: int
    #: Where the started notice and the result go; empty: the agent's own results queue.
    reply_queue: str = ""


@dataclass(frozen=True, kw_only=True)
class CommandSpec(Spec):
    TASK: ClassVar[str] = names.RUN_COMMAND

    command: str
    head_bytes: int = 65536
    tail_bytes: int = 65536
    max_output_bytes: int = 1 << 30
    #: Bytes of each stream to send the server whole, however long (--keep-output); 0: none.
    keep_output_bytes: int = 0

    @classmethod
    def from_wire(cls, data):
        spec = super().from_wire(data)
        if not spec.command.strip():
            raise WireError(E_EMPTY_COMMAND)
        return spec


@dataclass(frozen=True, kw_only=True)
class CollectSpec(Spec):
    TASK: ClassVar[str] = names.COLLECT_FACTS

    #: Collector plugins, name -> dotted path (agents import only paths under "collectors.").
    plugins: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PushSpec(Spec):
    TASK: ClassVar[str] = names.PUSH_FILES

    #: The blob to put at ``dest`` (wire.blobs), a file or, with ``tree``, a tar of a folder.
    manifest: dict
    dest: str
    mode: int | None = None
    owner: str | None = None
    tree: bool = False
    #: With ``tree``: {relative path: sha256} of its files, to tell "already equal".
    files: dict | None = None
    #: Write even where a folder on the way is one a non-root user can change (who could then
    #: swap what root writes there): the operator said so (workers.fdpath).
    allow_unsafe_parents: bool = False


@dataclass(frozen=True, kw_only=True)
class FetchSpec(Spec):
    TASK: ClassVar[str] = names.FETCH_FILE

    path: str
    #: The largest file the host may send (the broker holds it until the server stores it).
    max_bytes: int | None = None


#: The spec class of each agent task.
SPECS: dict[str, type[Spec]] = {cls.TASK: cls for cls in (CommandSpec, CollectSpec, PushSpec,
                                                          FetchSpec)}  # fmt: skip


# --- what comes back ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    """One output stream of a host task: a bounded head and tail, and its true size."""

    head: str
    tail: str
    total_bytes: int
    truncated: bool

    @classmethod
    def text(cls, text: str) -> Stream:
        """A short text kept whole (a summary line, a list of errors)."""
        return cls(text, "", len(text.encode()), False)

    @classmethod
    def from_wire(cls, data, what: str = "stream") -> Stream:
        if data is None:
            return EMPTY_STREAM
        if not isinstance(data, dict):
            raise WireError(E_NOT_OBJECT.format(what=what))
        return cls(**_check_fields(cls, data, what))

    def to_wire(self) -> dict:
        return {"head": self.head, "tail": self.tail, "total_bytes": self.total_bytes,
                "truncated": self.truncated}  # fmt: skip


EMPTY_STREAM = Stream("", "", 0, False)


@dataclass(frozen=True, kw_only=True)
class Started(_Message):
    """An agent began a host task (sent before the result, to the spec's reply queue)."""

    WHAT: ClassVar[str] = "started notice"

    task_id: str
    host: str = ""
    agent: str = ""
    agent_pid: int | None = None
    started_at: float | None = None
    #: The agent's signature over the rest (see _Message.signed).
    signature: str = ""


@dataclass(frozen=True, kw_only=True)
class Output(_Message):
    """What a running command wrote since the last one (workers.live): sent only by commands
    still running at the first flush, signed like every other notice, so that nobody else on
    the broker can make the server show output in a host's name."""

    WHAT: ClassVar[str] = "output chunk"

    task_id: str
    host: str = ""
    agent: str = ""
    #: Counted from 1 per task.
    seq: int = 0
    #: Seconds since the command started.
    elapsed: float = 0.0
    #: Each stream's new bytes (base64) and the offset in the stream they start at: a gap
    #: between two chunks is output skipped (more than a chunk carries between two flushes).
    stdout_at: int = 0
    stdout: str = ""
    stderr_at: int = 0
    stderr: str = ""
    signature: str = ""


@dataclass(frozen=True, kw_only=True)
class Report(_Message):
    """How a host task ended, from the one that ran it (or refused to)."""

    WHAT: ClassVar[str] = "report"

    task_id: str
    outcome: str
    host: str = ""
    agent: str = ""
    agent_pid: int | None = None
    exit_code: int | None = None
    stdout: Stream = EMPTY_STREAM
    stderr: Stream = EMPTY_STREAM
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    error: str = ""
    #: The command's process id on the host.
    pid: int | None = None
    traceback: str | None = None
    #: A second delivery of a task id the agent had already run: it did not run again.
    duplicate: bool = False
    #: From an agent that found the task's command left by its dead predecessor and ended it
    #: (workers.orphans): the task is lost, and ``error`` says what was killed.
    reaped: bool = False
    #: Collect: what the collectors found (facts and errors per plugin).
    facts_report: dict | None = None
    #: Push and fetch: {"outcome": TransferOutcome, "detail": ..., ...}.
    transfer: dict | None = None
    #: Fetch: the blob the host's file was sent as.
    fetch_manifest: dict | None = None
    #: The agent's signature over the rest (see _Message.signed).
    signature: str = ""

    @classmethod
    def refusal(cls, outcome: str, error: str, **fields) -> Report:
        """A host task that ended without running anything."""
        now = time.time()
        return cls(task_id=fields.pop("task_id", ""), outcome=outcome, error=error,
                   started_at=now, finished_at=now, duration=0.0, **fields)  # fmt: skip

    @classmethod
    def from_wire(cls, data) -> Report:
        data = _check_version(data, cls.WHAT)
        streams = {name: Stream.from_wire(data.get(name), f"report {name}")
                   for name in ("stdout", "stderr")}  # fmt: skip
        checked = _check_fields(cls, {k: v for k, v in data.items() if k not in streams}, cls.WHAT)
        return cls(**checked, **streams)

    def to_wire(self) -> dict:
        return {**super().to_wire(), "stdout": self.stdout.to_wire(),
                "stderr": self.stderr.to_wire()}  # fmt: skip

    def with_sender(self, **fields) -> Report:
        return dataclasses.replace(self, **fields)


@dataclass(frozen=True, kw_only=True)
class Registration(_Message):
    """An agent started and serves the host ``ip`` (one per IP queue it consumes)."""

    WHAT: ClassVar[str] = "registration"

    ip: str
    hostname: str = ""
    agent: str = ""
    agent_pid: int | None = None
    started_at: float | None = None
    #: The agent's own public key (PEM), and its signature over the rest of this message
    #: (wire.signing.sign_document): what the server accepts, as salt-key does, or not.
    pubkey: str = ""
    signature: str = ""


@dataclass(frozen=True, kw_only=True)
class Heartbeat(_Message):
    """An agent is alive (or, ``offline``, shutting down): sent every few seconds as a worker
    event, signed, in place of Celery's heartbeats for the server's verdicts (anyone on the
    broker can send a "worker-heartbeat" or "worker-offline" in any worker's name)."""

    WHAT: ClassVar[str] = "heartbeat"

    #: The hosts (IPs) the agent serves, fixed when it started.
    hosts: list
    agent: str
    agent_pid: int
    #: The agent's clock when it sent this (the server takes only recent ones).
    at: float
    #: Random per agent process, and counted from 1 in it: the server takes only ever later
    #: ones per host, whatever the host's clock does meanwhile (an NTP step back), so an old
    #: heartbeat sent again says nothing.
    boot: str = ""
    seq: int = 0
    offline: bool = False
    signature: str = ""
