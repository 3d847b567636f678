"""Django's system checks: the project's commands skip them (cmdb.jobs.cli.FleetCommand says
why), so they run here instead."""

import io

import pytest
from django.core.management import call_command

from cmdb.jobs.cli import FleetCommand


def test_the_system_checks_pass():
    out = io.StringIO()
    call_command("check", stdout=out)
    assert "no issues" in out.getvalue()


@pytest.mark.parametrize(
    "name", ["run", "check_task", "cancel", "collect", "push", "fetch", "facts", "changes",
             "hosts", "groups", "signing_key"],
)  # fmt: skip
def test_every_project_command_skips_them(name):
    from django.core.management import load_command_class

    app = {"facts": "cmdb.assets", "changes": "cmdb.assets", "hosts": "cmdb.hosts",
           "groups": "cmdb.hosts"}.get(name, "cmdb.jobs")  # fmt: skip
    command = load_command_class(app, name)
    assert isinstance(command, FleetCommand) and command.requires_system_checks == []
