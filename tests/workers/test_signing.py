"""Signing and verifying host task messages (wire/signing.py), and agents without a key."""

import base64
import os
import stat
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.fleet import ROOT
from wire import signing

TASK, IP, TASK_ID = "workers.run_command", "10.0.3.55", "3f9c2a61-0000-4000-8000-000000000001"
SPEC = {"job": "j1", "host": IP, "command": "df -h", "timeout": 300, "reply_queue": "r"}
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signed(key, deadline=NOW + 60, **overrides):
    args = {"task": TASK, "host": IP, "task_id": TASK_ID, "spec": SPEC, **overrides}
    return signing.sign(key, args["task"], args["host"], args["task_id"], deadline, args["spec"])


def check(key, auth, now=NOW, **overrides):
    """verify() of ``auth`` against the message as the agent received it (SPEC on IP...)."""
    args = {"task": TASK, "host": IP, "task_id": TASK_ID, "spec": SPEC, **overrides}
    return signing.verify(key.public_key(), auth, args["task"], args["host"], args["task_id"],
                          args["spec"], now=now)  # fmt: skip


def test_a_message_signed_by_the_server_verifies(key):
    assert check(key, signed(key)) is None


def test_the_encoding_does_not_depend_on_key_order(key):
    reordered = dict(reversed(list(SPEC.items())))
    assert check(key, signed(key), spec=reordered) is None


@pytest.mark.parametrize(
    "received",
    [
        {"spec": {**SPEC, "command": "rm -rf /"}},
        {"spec": {**SPEC, "timeout": 86400}},
        {"spec": {**SPEC, "extra": 1}},
        {"task": "workers.push_files"},
        {"host": "10.0.3.56"},
        {"task_id": "3f9c2a61-0000-4000-8000-000000000002"},
    ],
    ids=["other-command", "other-timeout", "added-key", "other-task", "other-ip", "other-id"],
)
def test_anything_changed_after_signing_is_refused(key, received):
    assert check(key, signed(key), **received) == signing.E_INVALID


def test_a_moved_deadline_is_refused(key):
    auth = signed(key)
    assert check(key, {**auth, "deadline": auth["deadline"] + 3600}) == signing.E_INVALID
    assert check(key, {**auth, "deadline": str(auth["deadline"])}) == signing.E_INVALID
    assert check(key, {**auth, "deadline": True}) == signing.E_INVALID


def test_an_expired_message_is_refused_after_the_small_deadline_slack(key):
    # A few seconds, not the clock slack: a task the server has ended must not start late.
    assert signing.DEADLINE_SLACK <= 1
    auth = signed(key, deadline=NOW)
    assert check(key, auth, now=NOW + signing.DEADLINE_SLACK) is None
    refusal = check(key, auth, now=NOW + signing.DEADLINE_SLACK + 1)
    ago = signing.DEADLINE_SLACK + 1
    assert refusal == f"signature expired: its deadline passed {ago} s ago; refused"


def test_a_deadline_beyond_the_longest_validity_is_refused(key):
    auth = signed(key, deadline=NOW + signing.MAX_VALIDITY + signing.CLOCK_SLACK + 60)
    assert check(key, auth).startswith("signature deadline")
    assert check(key, signed(key, deadline=NOW + signing.MAX_VALIDITY)) is None


def test_a_signature_by_another_key_is_refused(key):
    assert check(key, signed(Ed25519PrivateKey.generate())) == signing.E_INVALID


@pytest.mark.parametrize("auth", [None, {}, {"deadline": NOW + 60}, "sig", [], {"signature": ""}])
def test_a_missing_signature_is_refused(key, auth):
    assert check(key, auth) == signing.E_UNSIGNED


@pytest.mark.parametrize(
    "signature",
    ["not base64 at all!", base64.b64encode(b"\0" * 64).decode(), "AAAA", 12345, ["x"]],
    ids=["not-base64", "zeros", "short", "number", "list"],
)
def test_a_garbage_signature_is_refused(key, signature):
    assert check(key, {"deadline": NOW + 60, "signature": signature}) == signing.E_INVALID


def test_the_run_once_claim_outlives_every_valid_signature():
    from cmdb.jobs.dispatch import EXPIRES_SLACK, MAX_REACH_TIMEOUT
    from workers.tasks import CLAIM_TTL

    # A message can be replayed only while it is valid; its claim must still be there then.
    assert MAX_REACH_TIMEOUT <= signing.MAX_VALIDITY
    assert CLAIM_TTL > signing.MAX_VALIDITY + 2 * signing.CLOCK_SLACK
    assert EXPIRES_SLACK.total_seconds() == signing.DEADLINE_SLACK


# -- key files ------------------------------------------------------------------------------------
def test_the_key_is_made_once_private_to_its_owner_with_its_public_key_beside(tmp_path):
    path = tmp_path / "run" / "signing_key"

    key = signing.generate_key_pair(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = signing.load_public_key(signing.public_path(path))
    auth = signing.sign(key, TASK, IP, TASK_ID, NOW + 60, SPEC)
    assert signing.verify(public, auth, TASK, IP, TASK_ID, SPEC, now=NOW) is None
    again = signing.generate_key_pair(path)
    assert signing.public_pem(again) == signing.public_pem(key)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_key_file_that_is_missing_or_not_ed25519_is_a_clear_error(tmp_path):
    (tmp_path / "garbage.pub").write_text("-----BEGIN PUBLIC KEY-----\nxx\n")
    for path in (tmp_path / "missing.pub", tmp_path / "garbage.pub"):
        with pytest.raises(signing.SigningKeyError, match="cannot read the public key"):
            signing.load_public_key(path)
    with pytest.raises(signing.SigningKeyError, match="cannot read the signing key"):
        signing.load_private_key(tmp_path / "missing")


def test_the_server_refuses_a_configured_key_that_does_not_exist(tmp_path, settings):
    from cmdb.jobs import signer

    settings.CMDB = {**settings.CMDB, "SIGNING_KEY": str(tmp_path / "nope"),
                     "SIGNING_KEY_CREATE": False}  # fmt: skip
    with pytest.raises(signing.SigningKeyError, match="does not exist"):
        signer.private_key()


def test_sign_and_verify_cost_little(key):
    # A hang or pathology check, not a benchmark (bench/signing.py measures).
    started = time.perf_counter()
    for _ in range(200):
        assert check(key, signed(key)) is None
    assert time.perf_counter() - started < 5


# -- agents without a key -------------------------------------------------------------------------
def _agent(argv: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "CMDB_AGENT_PUBKEY"}
    # A broker nobody listens on: the agent must stop before it would connect anywhere.
    environ.update(REDIS_URL="redis://127.0.0.1:9/0", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(argv, cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def test_an_agent_without_a_public_key_refuses_to_start(tmp_path):
    out = _agent([sys.executable, "-m", "workers", "--ip", "127.0.1.60"], tmp_path)

    assert out.returncode == 2
    assert "agent: no public key to verify the server's messages with" in out.stderr
    assert "--pubkey" in out.stderr


def test_an_agent_with_an_unreadable_public_key_refuses_to_start(tmp_path):
    (tmp_path / "bad.pub").write_text("not a key\n")
    argv = [sys.executable, "-m", "workers", "--ip", "127.0.1.60", "--pubkey", "bad.pub"]

    out = _agent(argv, tmp_path)

    assert out.returncode == 2
    assert "agent: cannot read the public key bad.pub" in out.stderr


def test_a_bare_celery_agent_without_a_public_key_refuses_to_start(tmp_path):
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "127.0.1.60"]

    out = _agent(argv, tmp_path)

    assert out.returncode != 0
    assert "agent: no public key to verify the server's messages with" in out.stderr
