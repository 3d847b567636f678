"""The salt gateway's own checks (gateway/salt.py): what it will not start with, and the minion
it takes for a host, from the inventory only."""

import os
import subprocess
import sys

import pytest

from cmdb.hosts.choices import ModeChoices
from cmdb.hosts.models import Host
from gateway import salt
from tests.support.factories import make_host
from tests.support.fleet import ROOT


def _start(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CMDB_SALT_")}
    environ.update(CMDB_RUN_DIR=str(tmp_path), **env)
    return subprocess.run([sys.executable, "-m", "gateway", "--salt"], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_no_salt_api_url_is_a_clear_refusal_to_start(tmp_path):
    done = _start(tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(f"salt gateway: {salt.E_NO_URL}")


def test_plain_http_off_loopback_is_refused_at_start(tmp_path):
    done = _start(tmp_path, CMDB_SALT_API_URL="http://10.0.8.1:8000")
    assert done.returncode == 1
    assert "plain http off loopback" in done.stderr


def test_a_password_file_others_may_read_is_refused_at_start(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    done = _start(tmp_path, CMDB_SALT_API_URL="http://127.0.0.1:1",
                  CMDB_SALT_API_PASSWORD_FILE=str(secret))  # fmt: skip
    assert done.returncode == 1
    assert "mode 0644, must be 0600" in done.stderr and "s3cret" not in done.stderr


@pytest.mark.django_db(transaction=True)
def test_the_minion_is_the_one_the_inventory_records_for_that_host():
    make_host("10.0.8.5")
    make_host("10.0.8.6")
    Host.objects.filter(ip="10.0.8.5").update(mode=ModeChoices.SALT, salt_minion="web01")
    Host.objects.filter(ip="10.0.8.6").update(mode=ModeChoices.SALT, salt_minion="db01")
    assert salt.gateway.minion("10.0.8.5") == ("web01", None)
    assert salt.gateway.minion("10.0.8.6") == ("db01", None)
    Host.objects.filter(ip="10.0.8.5").update(salt_minion="web02")
    assert salt.gateway.minion("10.0.8.5") == ("web02", None)  # read when asked, not kept


@pytest.mark.django_db(transaction=True)
def test_a_host_not_in_salt_mode_or_with_a_glob_for_a_minion_is_refused():
    make_host("10.0.8.7")  # an agent host
    assert salt.gateway.minion("10.0.8.7") == (None, salt.E_NOT_SALT.format(ip="10.0.8.7"))
    assert salt.gateway.minion("10.0.8.9")[1] == salt.E_NOT_SALT.format(ip="10.0.8.9")
    # Written past `hosts add`'s check (the admin, SQL): still never a glob on the master.
    Host.objects.filter(ip="10.0.8.7").update(mode=ModeChoices.SALT, salt_minion="web*")
    minion, why = salt.gateway.minion("10.0.8.7")
    assert minion is None and "the recorded minion id 'web*' is not one" in why
    assert salt.gateway.hosts() == ["10.0.8.7"]
