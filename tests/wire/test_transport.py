"""The Celery settings both sides share, for a Sentinel broker URL."""

from wire import transport
from workers.config import AgentSettings

SENTINELS = "sentinel://:secret@127.0.0.1:26379/0;sentinel://:secret@127.0.0.1:26380/0"


def test_a_master_name_becomes_kombus_sentinel_options_with_the_brokers_timeouts():
    options = transport.celery_config(SENTINELS, "cmdb.central", 3, 7, master_name="cmdb")[
        "broker_transport_options"
    ]
    assert options["master_name"] == "cmdb"
    assert options["sentinel_kwargs"] == {"socket_connect_timeout": 3, "socket_timeout": 7,
                                          "retry": None}  # fmt: skip
    assert options["priority_steps"] == [0]


def test_without_a_master_name_nothing_of_sentinel_is_set_and_no_tls_is_forced():
    config = transport.celery_config(SENTINELS, "cmdb.central")
    assert "master_name" not in config["broker_transport_options"]
    assert config["broker_use_ssl"] is None


def test_the_agent_reads_the_master_name_as_the_server_does():
    settings = AgentSettings.from_environ(
        {"REDIS_URL": SENTINELS, "CMDB_BROKER_MASTER_NAME": "cmdb"}
    )
    options = settings.celery_config()["broker_transport_options"]
    assert options["master_name"] == "cmdb"
    assert AgentSettings.from_environ({}).broker_master_name is None


def test_a_sentinel_url_is_redacted_in_every_part():
    shown = transport.redacted(SENTINELS)
    assert "secret" not in shown
    assert shown == "sentinel://***@127.0.0.1:26379/0;sentinel://***@127.0.0.1:26380/0"
