"""Walk the chain and say where it breaks, if it does (`manage.py audit verify`)."""

from dataclasses import dataclass

from cmdb.audit.chain import GENESIS, HASHED, entry_hash
from cmdb.audit.choices import AuditActionChoices
from cmdb.audit.models import AuditEntry, AuditHead

E_GAP = "sequence jumps from {prev} to {seq}: entries between were deleted"
E_LINK = "its prev_hash is not the hash of entry {prev}: an entry before it was changed or removed"
E_HASH = "its hash does not match its fields: it was changed"
E_START = "the trail starts at entry {seq}, but no prune says so: entries before it were deleted"
E_START_PRUNED = ("the trail starts at entry {seq}, but the last prune kept entries from {kept}: "
                  "entries before it were deleted")  # fmt: skip
E_HEAD = "the chain ends at entry {seq}, but {head} entries were appended: the last were deleted"
E_GENESIS = "the first entry's prev_hash is not the chain's start"


@dataclass(frozen=True)
class Break:
    seq: int
    id: int
    reason: str


@dataclass(frozen=True)
class Verdict:
    checked: int
    first: int | None
    last: int | None
    broken: Break | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def _expected_first() -> int | None:
    """The first sequence the trail should start at: 1, or where the last prune left it."""
    prune = AuditEntry.objects.filter(action=AuditActionChoices.PRUNE).order_by("-seq").first()
    if prune is None:
        return 1
    return prune.detail.get("kept_from") or prune.seq


def verify(chunk_size: int = 2000) -> Verdict:
    """Check every entry's hash against its fields and its link to the one before, that the
    trail starts where it should (1, or where the last prune left it) and ends at the head."""
    rows = AuditEntry.objects.order_by("seq").values("id", "prev_hash", "hash", *HASHED)
    checked, first, prev = 0, None, None
    for row in rows.iterator(chunk_size=chunk_size):
        seq = row["seq"]
        if prev is None:
            first = seq
            expected = _expected_first()
            if seq == 1 and row["prev_hash"] != GENESIS:
                return Verdict(checked, first, seq, Break(seq, row["id"], E_GENESIS))
            if seq != expected:
                reason = (E_START if expected == 1 else E_START_PRUNED).format(
                    seq=seq, kept=expected
                )
                return Verdict(checked, first, seq, Break(seq, row["id"], reason))
        elif seq != prev["seq"] + 1:
            reason = E_GAP.format(prev=prev["seq"], seq=seq)
            return Verdict(checked, first, seq, Break(seq, row["id"], reason))
        elif row["prev_hash"] != prev["hash"]:
            reason = E_LINK.format(prev=prev["seq"])
            return Verdict(checked, first, seq, Break(seq, row["id"], reason))
        if entry_hash(row["prev_hash"], row) != row["hash"]:
            return Verdict(checked, first, seq, Break(seq, row["id"], E_HASH))
        checked, prev = checked + 1, row
    head = AuditHead.objects.filter(pk=1).first()
    last = prev["seq"] if prev else None
    if head is not None and (head.seq != (last or 0) or (prev and head.hash != prev["hash"])):
        broken = Break(
            last or 0, prev["id"] if prev else 0, E_HEAD.format(seq=last or 0, head=head.seq)
        )
        return Verdict(checked, first, last, broken)
    return Verdict(checked, first, last, None)
