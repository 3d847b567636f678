"""Review of issue 18's parts (the token endpoint, writable inventory, live events): attacks
that got through, each kept as a test."""

import pytest
import redis
from rest_framework.test import APIClient

from cmdb.access import attempts
from tests.support.api import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def login_counts(redis_url):
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{attempts.PREFIX}*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(f"{attempts.PREFIX}*"):
        client.delete(key)
    client.close()


def login(client, username, password, address="127.0.0.1"):
    return client.post("/api/token/", {"username": username, "password": password},
                       format="json", REMOTE_ADDR=address)  # fmt: skip


def test_parallel_guesses_do_not_pass_the_limit(login_counts, monkeypatch):
    """A password's check takes a hash's time: guesses sent in parallel all read the count
    before any of them wrote it. Here the last allowed guess is being checked while another
    arrives (a request made from inside the first's check): the second must wait."""
    from cmdb.api import token

    make_user(username="alice")
    anonymous = APIClient()
    for i in range(attempts.PER_USERNAME - 1):
        assert login(anonymous, "alice", f"guess{i}", address=f"127.0.5.{i}").status_code == 400
    real, nested = token.authenticate, []

    def slow_check(request, **credentials):
        if not nested:
            nested.append(None)
            nested[0] = login(anonymous, "alice", "parallel", address="127.0.6.1").status_code
        return real(request, **credentials)

    monkeypatch.setattr(token, "authenticate", slow_check)
    assert login(anonymous, "alice", "last", address="127.0.6.2").status_code == 400
    assert nested == [429]
    # And a success gives its attempt back: logging in does not use up one's own attempts.
    monkeypatch.setattr(token, "authenticate", real)
    login_counts.flushdb()
    for _ in range(attempts.PER_USERNAME + 2):
        assert login(anonymous, "alice", "pw").status_code == 200
