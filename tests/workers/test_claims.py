"""workers.claims: the host's own run-once ledger."""

import os
import threading
import uuid

import pytest

from workers import claims


def test_a_task_id_is_claimed_once_even_by_racing_processes(tmp_path):
    ledger = claims.Ledger(tmp_path / "claims")
    task_id = str(uuid.uuid4())
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        claims.Ledger(tmp_path / "claims").claim(task_id))) for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(results) == [False] * 7 + [True]
    assert ledger.claim(task_id) is False
    assert ledger.claim(str(uuid.uuid4())) is True
    assert (tmp_path / "claims").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("bad", ["../etc/passwd", "", ".", "a/b", "x" * 65, None, "-rf"])
def test_what_is_not_a_task_id_is_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        claims.Ledger(tmp_path).claim(bad)


def test_claims_are_kept_longer_than_any_message_is_valid_then_forgotten(tmp_path):
    from wire import signing

    assert claims.KEEP > signing.MAX_VALIDITY + 2 * signing.CLOCK_SLACK
    now = [1_000_000.0]
    ledger = claims.Ledger(tmp_path, keep=100, clock=lambda: now[0])
    ledger.claim("old")
    os.utime(tmp_path / "old", (now[0] - 101, now[0] - 101))
    ledger.claim("recent")

    assert ledger.prune() == 1
    assert sorted(os.listdir(tmp_path)) == ["recent"]
    assert ledger.claim("recent") is False


def test_a_claim_that_cannot_be_recorded_is_an_error_not_a_yes(tmp_path):
    ledger = claims.Ledger(tmp_path / "claims")
    (tmp_path / "claims").chmod(0o500)
    try:
        if os.geteuid() == 0:
            (tmp_path / "claims").rmdir()  # root writes anywhere: take the folder away instead
        with pytest.raises(OSError):
            ledger.claim(str(uuid.uuid4()))
    finally:
        if (tmp_path / "claims").exists():
            (tmp_path / "claims").chmod(0o700)
