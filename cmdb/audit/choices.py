"""What an audit entry says happened, and how it ended."""

from django.db import models

from cmdb.access.actor import VIA

#: The front-ends an entry may come through (cmdb.access.actor.VIA), as choices.
VIA_CHOICES = [(via, via) for via in VIA]


class AuditActionChoices(models.TextChoices):
    DISPATCH = "dispatch", "dispatch"
    REFUSED = "refused", "dispatch refused"
    CANCEL = "cancel", "cancel"
    KEY_ACCEPT = "key.accept", "key accepted"
    KEY_REJECT = "key.reject", "key rejected"
    KEY_DELETE = "key.delete", "key deleted"
    KEY_TRUST = "key.trust", "SSH host key trusted"
    KEY_MODE = "key.mode", "host mode changed"
    GRANT_ADD = "grant.add", "grant added"
    GRANT_CHANGE = "grant.change", "grant changed"
    GRANT_REMOVE = "grant.remove", "grant removed"
    GROUP_CHANGE = "group.change", "group membership changed"
    USER_ACCESS = "user.access", "user's groups, permissions or flags changed"
    TOKEN_ADD = "token.add", "API token made"
    TOKEN_REMOVE = "token.remove", "API token deleted"
    HOST_ADD = "host.add", "host added"
    HOST_CHANGE = "host.change", "host IP changed"
    HOST_REMOVE = "host.remove", "host removed"
    DOWNLOAD = "download", "fetched file downloaded"
    LOGIN_FAILED = "login.failed", "login failed"
    PRUNE = "audit.prune", "audit trail pruned"


class AuditOutcomeChoices(models.TextChoices):
    OK = "ok", "ok"
    REFUSED = "refused", "refused"
    FAILED = "failed", "failed"


#: The outcome an action has when the caller does not say.
DEFAULT_OUTCOME = {
    AuditActionChoices.REFUSED: AuditOutcomeChoices.REFUSED,
    AuditActionChoices.LOGIN_FAILED: AuditOutcomeChoices.FAILED,
}
