"""API fixtures: token clients for users with exactly the permissions a test gives."""

import pytest
from rest_framework.test import APIClient

from tests.support.api import VIEW_ALL, make_user, token_client


@pytest.fixture
def client_with(db):
    """client_with("jobs.view_job", ...): an API client for a new user with those permissions."""

    def make(*perms: str, username: str | None = None) -> APIClient:
        return token_client(make_user(*perms, username=username))

    return make


@pytest.fixture
def viewer(client_with) -> APIClient:
    return client_with(*VIEW_ALL)
