"""Agent liveness verdicts from signed heartbeats (pure: time is passed in)."""

from cmdb.jobs.monitor import Liveness
from wire.messages import Heartbeat

IP = "127.0.1.70"


def make(started=1000.0, lost_after=10.0):
    return Liveness(lost_after=lost_after, started=started)


def beat(at: float, pid: int = 7, agent: str = "agent@a", offline: bool = False) -> Heartbeat:
    return Heartbeat(hosts=[IP], agent=agent, agent_pid=pid, at=at, offline=offline)


def test_a_beating_agent_is_alive():
    live = make()
    assert live.heard(IP, beat(1005.0), now=1005.0)

    assert live.verdict(IP, "agent@a", 7, since=1001.0, now=1014.0) is None
    assert live.online(1014.0) == {IP}


def test_silence_longer_than_lost_after_is_lost():
    live = make()
    live.heard(IP, beat(1005.0), now=1005.0)

    assert "stopped sending heartbeats 11 s ago" in live.verdict(IP, "agent@a", 7, 1001.0, 1016.0)
    assert live.online(1016.0) == set()


def test_an_agent_never_heard_gets_a_full_window_after_the_monitor_starts_or_its_task_began():
    live = make(started=1000.0)

    assert live.verdict(IP, "agent@b", 7, since=990.0, now=1009.0) is None
    assert "stopped sending heartbeats" in live.verdict(IP, "agent@b", 7, 990.0, now=1011.0)
    # A task begun after the monitor started: its agent gets a full window from then.
    assert live.verdict(IP, "agent@b", 7, since=1008.0, now=1015.0) is None


def test_a_restarted_agent_has_lost_what_the_old_process_ran():
    live = make()
    live.heard(IP, beat(1005.0, pid=8), now=1011.0)

    assert (
        live.verdict(IP, "agent@a", 7, since=1001.0, now=1011.0)
        == "agent agent@a restarted (pid 7 -> 8) while it ran"
    )


def test_another_agent_serving_the_host_means_the_first_is_gone():
    live = make()
    live.heard(IP, beat(1005.0, agent="agent@other"), now=1011.0)

    assert "agent@other serves" in live.verdict(IP, "agent@a", 7, since=1001.0, now=1011.0)


def test_a_clean_shutdown_loses_running_tasks_after_a_short_grace():
    live = make()
    live.heard(IP, beat(1011.0, offline=True), now=1011.0)

    assert live.verdict(IP, "agent@a", 7, since=1001.0, now=1012.0) is None
    assert live.verdict(IP, "agent@a", 7, since=1001.0, now=1017.0) == (
        "agent agent@a shut down while it ran"
    )


def test_an_old_heartbeat_sent_again_says_nothing():
    live = make()
    assert live.heard(IP, beat(1005.0), now=1005.0)
    assert not live.heard(IP, beat(1005.0), now=1006.0)  # the same one again
    assert not live.heard(IP, beat(1004.0, pid=8), now=1006.0)  # an older one, of another pid
    assert not live.heard(IP, beat(1004.0, offline=True), now=1006.0)  # an older shutdown
    # Nor one that is old by the host's own clock, the first after the monitor started.
    fresh = make(started=2000.0)
    assert not fresh.heard(IP, beat(1005.0), now=2000.0)

    assert live.verdict(IP, "agent@a", 7, since=1001.0, now=1012.0) is None


def test_no_verdicts_until_the_monitor_has_listened_a_full_window():
    """An old heartbeat of a previous agent process, sent again before the live agent's
    next one, must not condemn what the live agent runs."""
    live = make(started=1000.0)
    live.heard(IP, beat(999.0, pid=6), now=1001.0)

    assert live.verdict(IP, "agent@a", 7, since=995.0, now=1005.0) is None
    live.heard(IP, beat(1006.0, pid=7), now=1006.0)  # the live one
    assert live.verdict(IP, "agent@a", 7, since=995.0, now=1011.0) is None


def test_a_monitor_that_hears_nobody_at_all_is_deaf_not_a_judge():
    live = make(started=1000.0, lost_after=10.0)
    assert live.deaf(1011.0)  # not even the central worker's own heartbeats came through

    live.event(1011.0)
    assert not live.deaf(1015.0)


def test_within_one_agent_process_the_count_orders_heartbeats_not_the_clock():
    live = make()
    first = Heartbeat(hosts=[IP], agent="agent@a", agent_pid=7, at=1005.0, boot="b1", seq=1)
    assert live.heard(IP, first, now=1005.0)
    # NTP stepped the host's clock back: its next heartbeat is still taken.
    stepped = Heartbeat(hosts=[IP], agent="agent@a", agent_pid=7, at=1001.0, boot="b1", seq=2)
    assert live.heard(IP, stepped, now=1006.0)
    # The first one again: not later in its process, whatever it says of the time.
    assert not live.heard(IP, first, now=1007.0)
    # Another process (a restart): later by the host's clock, or nothing.
    older = Heartbeat(hosts=[IP], agent="agent@a", agent_pid=6, at=1000.0, boot="b0", seq=99)
    assert not live.heard(IP, older, now=1007.0)


def test_a_heartbeat_from_before_the_task_began_says_nothing_against_it():
    """Its agent's heartbeats were not taken for a while (its host was not accepted, say),
    then it began a task: the signed started notice is as good a sign of life."""
    live = make()
    live.heard(IP, beat(1005.0), now=1005.0)

    assert live.verdict(IP, "agent@a", 7, since=1060.0, now=1062.0) is None
    assert "stopped sending heartbeats" in live.verdict(IP, "agent@a", 7, 1060.0, now=1071.0)
