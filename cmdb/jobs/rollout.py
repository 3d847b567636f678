"""Rolling execution: a first canary batch, then batches, stopped once too many hosts failed.

Pure: what a request gives, its problems, what it resolves to once the job's hosts are known,
and how a job says it. cmdb.jobs.batches sends each batch and stops the rest. For a job of T
hosts (every resolved target, the canary's included):

- ``batch`` N: N hosts at a time; P%: ceil(P% of T), at least 1 (a batch never rounds to
  nothing). Without it (a canary alone) the rest goes at once after the canary.
- ``max_failures`` M: the rest is stopped once more than M hosts have failed; P%: floor(P% of
  T), so 10% of 25 hosts allows 2, not 3 (a limit rounds towards stopping). It needs a batch or
  a canary: with neither, every host is sent to at once and there is nothing left to stop.
- ``canary`` N: the first N hosts (by IP) go alone; any failure among them stops the rest,
  whatever ``max_failures`` allows (that is the canary's point).

A job's params keep both: "batch", "max_failures", "canary" resolved (what cmdb.jobs.batches
reads) and "rollout", as given ({"batch": "10%", ...}), so that a job can say "batch 10% (3
hosts)".
"""

import math
import re
from dataclasses import dataclass
from decimal import Decimal

from client.report import describe_rolling

E_BATCH = (
    "batch must be a number of hosts (1 or more) or a percentage of the job's hosts (more "
    "than 0%, at most 100%), not {value!r}"
)
E_MAX_FAILURES = (
    "max failures must be a number of hosts (0 or more) or a percentage of the job's hosts "
    "(0% to 100%), not {value!r}"
)
E_CANARY = "canary must be a whole number of hosts, 1 or more, not {value!r}"
E_NOTHING_TO_STOP = (
    "max failures needs a batch or a canary too: without either, every host is sent to at "
    "once and nothing is left to stop"
)

#: "3", "10%", "2.5%" (spaces around allowed).
_AMOUNT = re.compile(r"\s*(?:(\d+)|(\d+(?:\.\d+)?)\s*%)\s*")


@dataclass(frozen=True)
class Amount:
    """A number of hosts, or a percentage of the job's hosts."""

    value: int | Decimal
    percent: bool = False

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)

    def hosts(self, total: int, rounding) -> int:
        """How many hosts of ``total``; a percentage rounded by ``rounding`` (math.ceil ...)."""
        return rounding(self.value * total / 100) if self.percent else self.value


def parse(value) -> Amount:
    """An int, or a string as "3", "10%" or "2.5%"; ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Amount(value)
    match = _AMOUNT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a number of hosts or a percentage: {value!r}")
    return Amount(int(match[1])) if match[1] else Amount(Decimal(match[2]), percent=True)


def parse_batch(value) -> Amount:
    amount = parse(value)
    if not (0 < amount.value <= 100 if amount.percent else amount.value >= 1):
        raise ValueError(value)
    return amount


def parse_max_failures(value) -> Amount:
    amount = parse(value)
    if not (0 <= amount.value <= 100 if amount.percent else amount.value >= 0):
        raise ValueError(value)
    return amount


def parse_canary(value) -> int:
    amount = parse(value)
    if amount.percent or amount.value < 1:
        raise ValueError(value)
    return amount.value


#: Each field, its parser and its message.
_FIELDS = (("batch", parse_batch, E_BATCH), ("max_failures", parse_max_failures, E_MAX_FAILURES),
           ("canary", parse_canary, E_CANARY))  # fmt: skip


@dataclass(frozen=True)
class Rollout:
    """How a job goes out, as a request gives it (ints, or strings as the CLI and forms send
    them); all None: to every host at once."""

    batch: int | str | None = None
    max_failures: int | str | None = None
    canary: int | str | None = None

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for each thing wrong, in the request's words."""
        found = []
        for name, parser, message in _FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                parser(value)
            except ValueError:
                found.append((name, message.format(value=value)))
        if self.max_failures is not None and self.batch is None and self.canary is None:
            found.append(("max_failures", E_NOTHING_TO_STOP))
        return found

    def params(self, total: int) -> dict:
        """The job's params for ``total`` hosts (valid values only: problems() first); {} for
        a job sent at once."""
        if self.batch is None and self.canary is None:
            return {}
        canary = min(parse_canary(self.canary), total) if self.canary is not None else 0
        rest = max(total - canary, 1)
        batch = rest if self.batch is None else parse_batch(self.batch).hosts(total, math.ceil)
        params = {"batch": min(max(batch, 1), rest), "rollout": {}}
        if canary:
            params["canary"] = params["rollout"]["canary"] = canary
        if self.batch is not None:
            params["rollout"]["batch"] = str(parse_batch(self.batch))
        if self.max_failures is not None:
            limit = parse_max_failures(self.max_failures)
            params["max_failures"] = min(limit.hosts(total, math.floor), total)
            params["rollout"]["max_failures"] = str(limit)
        return params


def batch_of(params: dict, index: int, total: int) -> int:
    """The batch of the job's ``index``-th host (0: sent at once): the canary is batch 0,
    then batches of params["batch"] hosts."""
    canary = params.get("canary") or 0
    size = params.get("batch") or max(total, 1)
    if index < canary:
        return 0
    return (index - canary) // size + (1 if canary else 0)


def given(params: dict, name: str) -> str:
    """What the request said for ``name``: "10%", "3" (a job from before "rollout" was kept
    says its resolved number)."""
    return str(params.get("rollout", {}).get(name, params.get(name)))


def summary(params: dict) -> dict | None:
    """The job's rollout for its document: each of canary, batch and max failures as given
    and in hosts (null: not given); None for a job sent at once."""
    if "batch" not in params:
        return None
    # A job from before "rollout" was kept: what its params have.
    asked = params.get("rollout", params)

    def part(name: str) -> dict | None:
        return {"given": given(params, name), "hosts": params[name]} if name in asked else None

    return {"canary": params.get("canary"), "batch": part("batch"),
            "max_failures": part("max_failures")}  # fmt: skip


def describe(params: dict) -> str:
    """One line: "canary 2 hosts, then batch 10% (3 hosts), max failures 1"; "" for a job
    sent at once."""
    return describe_rolling(summary(params))
