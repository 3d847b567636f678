"""Audit entries, and the head of their chain."""

from django.db import IntegrityError, connections, models, transaction
from django.utils import timezone

from cmdb.audit.chain import GENESIS, HASHED, entry_hash
from cmdb.audit.choices import VIA_CHOICES, AuditActionChoices, AuditOutcomeChoices


class AuditEntryManager(models.Manager):
    def append(self, at=None, **fields) -> "AuditEntry":
        """Add an entry at the end of the chain (``at``: now, read once the chain is ours).

        Two writers (the web and the central worker) must not both take the same end: the
        head row is locked FOR UPDATE on PostgreSQL; on SQLite the write lock taken at BEGIN
        IMMEDIATE (settings) already serialises every writer. Joins the caller's transaction:
        the entry is kept only if what it records is.
        """
        with transaction.atomic(using=self.db):
            seq, prev_hash = self._locked_head()
            fields.update(seq=seq + 1, at=at or timezone.now(), prev_hash=prev_hash)
            fields["hash"] = entry_hash(prev_hash, fields)
            entry = self.using(self.db).create(**fields)
            with connections[self.db].cursor() as cursor:
                cursor.execute(f"UPDATE {AuditHead._meta.db_table} SET seq = %s, hash = %s "
                               "WHERE id = 1", [entry.seq, entry.hash])  # fmt: skip
        return entry

    def _locked_head(self) -> tuple[int, str]:
        """The (seq, hash) the chain ends at, its row locked until the transaction ends."""
        connection = connections[self.db]
        # Raw SQL: on a small machine the ORM's query building costs a few times the query.
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        read = f"SELECT seq, hash FROM {AuditHead._meta.db_table} WHERE id = 1{lock}"
        with connection.cursor() as cursor:
            cursor.execute(read)
            head = cursor.fetchone()
            if head is not None:
                return head
        # None yet, or emptied with the table by `manage.py flush`: the chain's end is then
        # its last entry.
        last = self.using(self.db).order_by("-seq").values("seq", "hash").first()
        try:
            with transaction.atomic(using=self.db):
                AuditHead.objects.using(self.db).create(
                    pk=1, seq=last["seq"] if last else 0, hash=last["hash"] if last else GENESIS
                )
        except IntegrityError:
            pass  # another writer made it first: wait for its lock below
        with connection.cursor() as cursor:
            cursor.execute(read)
            return cursor.fetchone()


class AuditEntry(models.Model):
    """One thing someone (or the server) did or tried. Never changed, never deleted but by
    the retention (cmdb.audit.retention): database triggers refuse anything else."""

    seq = models.PositiveBigIntegerField(
        "sequence", unique=True, editable=False,
        help_text="Its place in the chain: 1, 2, 3 ... with no gap (a gap is a deleted entry).",
    )  # fmt: skip
    at = models.DateTimeField("at", db_index=True, editable=False, help_text="Server time.")
    username = models.CharField(
        "user", max_length=150, blank=True, db_index=True,
        help_text="Who; empty for the server itself. For a failed login, the name tried.",
    )  # fmt: skip
    via = models.CharField("via", max_length=16, choices=VIA_CHOICES,
                           help_text="The front-end it came through.")  # fmt: skip
    address = models.CharField("client address", max_length=45, blank=True)
    action = models.CharField("action", max_length=32, choices=AuditActionChoices.choices,
                              db_index=True)  # fmt: skip
    outcome = models.CharField("outcome", max_length=16, choices=AuditOutcomeChoices.choices,
                               default=AuditOutcomeChoices.OK)  # fmt: skip
    kind = models.CharField("job kind", max_length=32, blank=True)
    command = models.TextField("command", blank=True, help_text="At most 64 KiB of it.")
    targets_given = models.JSONField(
        "targets as given", default=list, blank=True,
        help_text="As the requester named them: IPs, hostnames, groups, fact expressions.",
    )  # fmt: skip
    targets_resolved = models.JSONField(
        "targets", default=list, blank=True, help_text="The IPs those targets resolved to."
    )
    hosts = models.TextField(
        "hosts", blank=True, editable=False,
        help_text='The resolved IPs as text, " 10.0.0.1 10.0.0.2 ": filtering by host with a '
        "LIKE works on SQLite too, where JSON containment does not.",
    )  # fmt: skip
    job_id = models.UUIDField(
        "job", null=True, blank=True, db_index=True,
        help_text="Not a foreign key: the entry outlives the job.",
    )  # fmt: skip
    detail = models.JSONField("detail", default=dict, blank=True,
                              help_text="Why it was refused, what changed, ...")  # fmt: skip
    prev_hash = models.CharField("previous hash", max_length=64, editable=False)
    hash = models.CharField(
        "hash", max_length=64, editable=False,
        help_text="sha256 of the previous hash and this entry's fields (cmdb/audit/chain.py).",
    )  # fmt: skip

    objects = AuditEntryManager()

    class Meta:
        ordering = ["-seq"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"
        # Only reading can be granted: nobody may add, change or delete an entry by hand.
        default_permissions = ("view",)

    def __str__(self):
        who = self.username or "server"
        return f"#{self.seq} {self.at:%Y-%m-%d %H:%M:%S} {who} {self.action}"

    def hashed_fields(self) -> dict:
        return {name: getattr(self, name) for name in HASHED}


class AuditHead(models.Model):
    """The end of the chain (one row): the row appends lock, and what `audit verify` checks
    the last entry against (entries cut off the end leave it behind)."""

    seq = models.PositiveBigIntegerField("last sequence", default=0)
    hash = models.CharField("last hash", max_length=64, default=GENESIS)

    class Meta:
        verbose_name = "audit chain head"
        default_permissions = ()

    def __str__(self):
        return f"audit chain head at {self.seq}"
