"""The broker URLs `manage.py broker_acl` prints, for a plain and a Sentinel broker."""

import pytest
from django.core.management.base import CommandError

from cmdb.hosts.management.commands.broker_acl import broker_address, database, with_credentials

SENTINELS = "sentinel://old:pw@10.0.0.1:26379/2;sentinel://10.0.0.2:26379;sentinel://10.0.0.3"


def test_a_sentinel_broker_keeps_every_sentinel_and_its_credentials_go_in_the_first_url():
    address = broker_address(SENTINELS)
    assert (
        address == "sentinel://10.0.0.1:26379/2;sentinel://10.0.0.2:26379/0;sentinel://10.0.0.3/0"
    )
    assert database(address) == 2
    url = with_credentials(address, "cmdb-agent-10.0.3.55", "s3cr/t")
    assert url == ("sentinel://cmdb-agent-10.0.3.55:s3cr%2Ft@10.0.0.1:26379/2;"
                   "sentinel://10.0.0.2:26379/0;sentinel://10.0.0.3/0")  # fmt: skip


def test_a_plain_broker_is_as_before():
    address = broker_address("rediss://u:p@broker.example:6380/0?ssl_cert_reqs=required")
    assert address == "rediss://broker.example:6380/0?ssl_cert_reqs=required"
    assert (
        with_credentials(address, "u", "p")
        == "rediss://u:p@broker.example:6380/0?ssl_cert_reqs=required"
    )


@pytest.mark.parametrize("url", ["redis://a:1/0;redis://b:2/0", "sentinel://a:1;redis://b:2",
                                 "http://broker:6379", "sentinel:///0"])  # fmt: skip
def test_anything_else_is_refused(url):
    with pytest.raises(CommandError):
        broker_address(url)
