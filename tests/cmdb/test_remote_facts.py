"""A host collected through the remote-facts script is stored as its agent's collection is."""

import secrets
import subprocess

import pytest

from cmdb.assets.models import Asset, Change
from cmdb.assets.store import store_report
from collectors import collect, remote
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db


def scripted_report() -> dict:
    nonce = secrets.token_hex(16)
    done = subprocess.run(
        ["/bin/sh", "-s"], input=remote.script(nonce), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return remote.report(done.stdout, nonce)


def test_the_scripted_collection_after_the_agents_changes_nothing():
    host = make_host("10.0.3.56", hostname="web2")
    assert [c.action for c in store_report(host, collect())] == ["discovered"]
    rows = {(a.kind, a.key): a.data for a in Asset.objects.filter(host=host)}

    assert store_report(host, scripted_report()) == []  # the same rows: no history written
    assert {(a.kind, a.key): a.data for a in Asset.objects.filter(host=host)} == rows
    assert Change.objects.filter(host=host).count() == 1
    assert {kind for kind, _ in rows} >= {"system", "cpu", "memory", "disk", "mount", "nic"}
