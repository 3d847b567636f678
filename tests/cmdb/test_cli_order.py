"""What the terminal shows at a few hundred hosts: numeric address order, `--hosts a,b`."""

from client import grouping
from cmdb.jobs import cli, report
from cmdb.jobs.choices import HostTaskStateChoices
from cmdb.jobs.models import HostTask


def test_addresses_sort_as_numbers_not_text():
    ips = ["127.0.2.100", "127.0.2.10", "127.0.2.1", "127.0.10.1", "127.0.2.2", "::1", "web01"]
    ordered = sorted(ips, key=report.ip_order)
    assert ordered == ["127.0.2.1", "127.0.2.2", "127.0.2.10", "127.0.2.100", "127.0.10.1",
                       "::1", "web01"]  # fmt: skip


def test_commas_in_hosts_are_separators():
    got = cli.targets({"hosts": ["127.0.1.1,127.0.1.2", "127.0.1.3", "127.0.1.4,"]})
    assert got.hosts == ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"]
    assert cli.targets({}).hosts == []


def test_a_job_lists_its_hosts_in_numeric_order():
    # Unsaved rows: format_job is pure (no queries), what check_task prints.
    tasks = [HostTask(ip=ip, state="ok", exit_code=0) for ip in ("127.0.2.10", "127.0.2.9",
                                                                  "127.0.2.100")]  # fmt: skip
    text = report.format_job(None, tasks, grouped=False)
    hosts = [line.split()[2] for line in text.splitlines() if line.startswith("from host")]
    assert hosts == ["127.0.2.9", "127.0.2.10", "127.0.2.100"]
    # Grouped (the default): one block, its hosts in the same order.
    grouped = report.format_job(None, tasks)
    assert grouped == "from 3 hosts: 127.0.2.9-10, 127.0.2.100  (ok, exit 0)\n"


def test_the_client_knows_the_server_states_in_their_order():
    # client/ imports nothing of the server's: its list of states must follow the choices.
    assert tuple(HostTaskStateChoices.values) == grouping.STATES
