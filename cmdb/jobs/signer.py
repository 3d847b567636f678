"""The server's signing key, and the signed header of each host task message it publishes."""

import contextlib
import functools
import hashlib
import math
from datetime import datetime
from pathlib import Path

from django.conf import settings

from wire import signing
from wire.signing import SigningKeyError

__all__ = ["SigningKeyError", "auth_header", "fingerprint", "key_path", "private_key"]

E_MISSING = (
    "the signing key CMDB_SIGNING_KEY={path} does not exist: make it with "
    "`python manage.py signing_key --create` (or `openssl genpkey -algorithm ed25519 -out {path}`)"
)


def key_path() -> Path:
    return Path(settings.CMDB["SIGNING_KEY"])


def private_key():
    """The server's Ed25519 private key; made once at the default path (RUN_DIR/signing_key)."""
    return _load(str(key_path()), settings.CMDB["SIGNING_KEY_CREATE"])


@functools.cache
def _load(path: str, create: bool):
    # Made only at the default path: a configured path that is missing is a mistake (a typo, an
    # unmounted volume), and a fresh key there would only make every agent refuse every message.
    if create:
        return signing.generate_key_pair(path)
    if not Path(path).exists():
        raise SigningKeyError(E_MISSING.format(path=path))
    key = signing.load_private_key(path)
    # In a read-only folder `manage.py signing_key --public` prints the public key all the same.
    with contextlib.suppress(OSError):
        signing.write_public_key(key, signing.public_path(path))
    return key


def auth_header(task: str, host: str, task_id: str, deadline: datetime, spec: dict) -> dict:
    """The header that lets the agent on ``host`` run ``task`` with ``spec`` until ``deadline``."""
    stamp = math.ceil(deadline.timestamp())
    return {signing.HEADER: signing.sign(private_key(), task, host, task_id, stamp, spec)}


def fingerprint() -> str:
    """SHA-256 of the public key (hex, shortened), to compare the key of one server process
    with another's or with the file agents were given."""
    return hashlib.sha256(signing.public_pem(private_key())).hexdigest()[:16]
