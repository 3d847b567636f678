"""Ed25519 signatures that bind a host task message to its task, host, id, deadline and spec.

Asymmetric on purpose: the server alone holds the private key and agents hold only the public
one. With a shared secret (HMAC) the key would sit on every host, and whoever took one host
(agents run commands as root) could sign commands for all the others.

What is signed is ``canonical(...)``, not Celery's message: Celery's auth serializer signs the
body but not the headers (the task name can be swapped) and has no nonce or expiry (a message can
be replayed). The agent rebuilds these bytes from what it received and where: its own task name,
the queue it consumed, the task id and the spec it will act on. So a signature made for one
(task, host, id, spec) is worthless for any other, the deadline bounds how long it is good for,
and the agent's run-once claim on the task id (kept longer than that) stops a replay of it.

Part of the wire contract (wire/): no Celery, no Django, no environment.
"""

import base64
import binascii
import hashlib
import json
import os
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: Message header carrying ``{"deadline": <epoch seconds>, "signature": <base64>}``. A header,
#: not a kwarg: the task functions keep their signature, and an agent older than signing ignores it.
HEADER = "cmdb_auth"

#: Seconds a host's clock may run behind or ahead of the server's, for what is not a deadline
#: (a deadline too far ahead, heartbeats' and registrations' times): a valid message must not be
#: refused for a slightly wrong clock.
CLOCK_SLACK = 300

#: Seconds past its deadline, on the host's clock, that an agent still starts a task (dispatch
#: gives Celery's ``expires`` the same). Small: nothing starts late, even with the central
#: worker down (nobody to fence). The server's fence at the reach deadline
#: (wire.names.CLAIMED_BY_SERVER) is what decides; this is for a host whose clock is a little
#: behind or ahead (keep hosts on NTP: one more than a second ahead refuses a task taken in
#: the last moment before its deadline, which then ends in error, saying so).
DEADLINE_SLACK = 1

#: The longest a signed message stays valid (dispatch's reach timeout is at most 3000 s). Agents
#: refuse a deadline further off, so their run-once claims (workers.claims.KEEP) outlive it.
MAX_VALIDITY = 3600

E_NO_PUBKEY = (
    "no public key to verify the server's messages with: give its path with --pubkey or "
    "$CMDB_AGENT_PUBKEY (the server's RUN_DIR/signing_key.pub); the agent will not start without"
)
E_NO_KEY = "the agent has no public key to verify messages with ({reason}); refused"
E_UNSIGNED = "signature missing: message not signed by the server; refused"
E_INVALID = "signature invalid: message not signed by the server; refused"
E_EXPIRED = "signature expired: its deadline passed {ago:.0f} s ago; refused"
E_TOO_FAR = "signature deadline {ahead:.0f} s ahead, longer than a message may live; refused"


class SigningKeyError(RuntimeError):
    """A key file is missing, unreadable or not an Ed25519 key in PEM."""


def canonical(task: str, host: str, task_id: str, deadline: int, spec) -> bytes:
    """The bytes signed and verified: one encoding, whatever order the dicts were built in."""
    doc = {"task": task, "host": host, "id": task_id, "deadline": deadline, "spec": spec}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(key: Ed25519PrivateKey, task: str, host: str, task_id: str, deadline: int, spec) -> dict:
    """The header value for one message: its deadline and the signature over all of it."""
    signature = key.sign(canonical(task, host, task_id, deadline, spec))
    return {"deadline": deadline, "signature": base64.b64encode(signature).decode("ascii")}


def verify(key: Ed25519PublicKey, auth, task: str, host: str, task_id: str, spec,
           now: float | None = None) -> str | None:  # fmt: skip
    """Why the message must not run, or None. The signature is checked before the deadline,
    so a forged message is always called forged, never merely expired."""
    if not isinstance(auth, dict) or not auth.get("signature"):
        return E_UNSIGNED
    deadline = auth.get("deadline")
    if type(deadline) is not int:
        return E_INVALID
    try:
        raw = base64.b64decode(auth["signature"], validate=True)
        key.verify(raw, canonical(task, host, task_id, deadline, spec))
    except (InvalidSignature, binascii.Error, TypeError, ValueError):
        return E_INVALID
    now = time.time() if now is None else now
    if now > deadline + DEADLINE_SLACK:
        return E_EXPIRED.format(ago=now - deadline)
    if deadline - now > MAX_VALIDITY + CLOCK_SLACK:
        return E_TOO_FAR.format(ahead=deadline - now)
    return None


# -- key files ------------------------------------------------------------------------------------
def public_path(private_path: Path | str) -> Path:
    """Where the public key of a private key file is written: beside it, ``.pub`` appended."""
    private_path = Path(private_path)
    return private_path.with_name(private_path.name + ".pub")


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot read the public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} is not an Ed25519 public key")
    return key


def generate_key_pair(path: Path | str) -> Ed25519PrivateKey:
    """Make a private key at ``path`` (0600) unless one is there; write its public key beside it.

    Safe when several processes start at once: the key is written to a temporary file and
    linked into place, so nobody reads a half-written key and the first one made wins.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = load_private_key(path)
    write_public_key(key, public_path(path))
    return key


def write_public_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write (or correct) the public key file agents are given; readable by everyone."""
    pem = public_pem(key)
    try:
        if path.read_bytes() == pem:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pem)
    tmp.chmod(0o644)
    os.replace(tmp, path)


# -- what agents sign ------------------------------------------------------------------------------
E_BAD_AGENT_SIGNATURE = "not signed by the agent's own key"


def sign_document(key: Ed25519PrivateKey, doc: dict) -> str:
    """An agent's signature (base64) over ``doc``, a message of the contract without its
    ``signature`` field, in the one canonical encoding."""
    return base64.b64encode(key.sign(_canonical_doc(doc))).decode("ascii")


def verify_document(key: Ed25519PublicKey, doc: dict, signature) -> bool:
    """True when ``signature`` is ``key``'s over ``doc`` (without its ``signature`` field)."""
    if not isinstance(signature, str):
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), _canonical_doc(doc))
    except (InvalidSignature, binascii.Error, TypeError, ValueError):
        return False
    return True


def _canonical_doc(doc: dict) -> bytes:
    unsigned = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def public_key_from_pem(pem: str) -> Ed25519PublicKey:
    """A public key sent as PEM text (an agent's, in its registration); SigningKeyError if not."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise SigningKeyError(f"not a public key in PEM: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("not an Ed25519 public key")
    return key


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """As ssh shows one: SHA256 of the raw key, base64 without padding."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
