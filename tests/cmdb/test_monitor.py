"""Agent liveness verdicts (pure: time is passed in)."""

from cmdb.jobs.monitor import Liveness


def make(started=1000.0, lost_after=10.0):
    return Liveness(lost_after=lost_after, started=started)


def test_a_beating_agent_is_alive():
    live = make()
    live.heard("agent@a", pid=7, at=1005.0)

    assert live.verdict("agent@a", 7, now=1014.0) is None
    assert live.online(1014.0) == {"agent@a"}


def test_silence_longer_than_lost_after_is_lost():
    live = make()
    live.heard("agent@a", pid=7, at=1005.0)

    assert "stopped sending heartbeats 11 s ago" in live.verdict("agent@a", 7, now=1016.0)
    assert live.online(1016.0) == set()


def test_an_agent_never_heard_gets_a_full_window_after_the_monitor_starts():
    live = make(started=1000.0)

    assert live.verdict("agent@b", 7, now=1009.0) is None
    assert "stopped sending heartbeats" in live.verdict("agent@b", 7, now=1011.0)


def test_a_restarted_agent_has_lost_what_the_old_process_ran():
    live = make()
    live.heard("agent@a", pid=8, at=1005.0)

    assert (
        live.verdict("agent@a", 7, now=1006.0)
        == "agent agent@a restarted (pid 7 -> 8) while it ran"
    )


def test_a_clean_shutdown_loses_running_tasks_after_a_short_grace():
    live = make()
    live.heard("agent@a", pid=7, at=1005.0, offline=True)

    assert live.verdict("agent@a", 7, now=1007.0) is None
    assert live.verdict("agent@a", 7, now=1011.0) == "agent agent@a shut down while it ran"


def test_a_monitor_that_hears_nobody_at_all_is_deaf_not_a_judge():
    live = make(started=1000.0, lost_after=10.0)
    assert live.deaf(1011.0)  # not even the central worker's own heartbeats came through

    live.heard("central@x", pid=1, at=1011.0)
    assert not live.deaf(1015.0)
