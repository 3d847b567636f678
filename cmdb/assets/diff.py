"""Compare a host's current asset rows with a new collection (pure: no Django)."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChangeEntry:
    action: str  # added, removed, changed
    kind: str
    key: str
    field: str = ""
    old: Any = None
    new: Any = None


Rows = dict[tuple[str, str], dict]


def diff(old: Rows, new: Rows, reported_kinds: set[str] | None = None) -> list[ChangeEntry]:
    """What was added, removed, and changed field by field, keyed by (kind, key).

    Only kinds the new collection reported are checked for removals, so a plugin that failed
    this time does not read as "every disk removed".
    """
    entries: list[ChangeEntry] = []
    if reported_kinds is None:
        reported_kinds = {kind for kind, _ in new}
    for ident in sorted(new.keys() - old.keys()):
        entries.append(ChangeEntry("added", *ident, new=new[ident]))
    for ident in sorted(old.keys() - new.keys()):
        if ident[0] in reported_kinds:
            entries.append(ChangeEntry("removed", *ident, old=old[ident]))
    for ident in sorted(old.keys() & new.keys()):
        before, after = old[ident], new[ident]
        for name in sorted(before.keys() | after.keys()):
            if before.get(name) != after.get(name):
                entries.append(
                    ChangeEntry("changed", *ident, field=name, old=before.get(name),
                                new=after.get(name))
                )  # fmt: skip
    return entries
