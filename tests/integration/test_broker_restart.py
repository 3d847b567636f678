"""The broker killed and started again: the central worker and the agent come back by
themselves, and the everyday loop works again without restarting anything of ours."""

import signal
import time

import pytest

from deploy.local import Fleet
from tests.support.cli import ID_LINE
from tests.support.fleet import free_port, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.django_db(transaction=True)]

IP = "127.0.1.66"  # auto-accepted, nobody else's


def test_after_a_broker_restart_the_loop_works_again_and_the_intake_restarts_cleanly(
    tmp_path, process_env, manage
):  # fmt: skip
    env = {**process_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    fleet = Fleet(tmp_path / "restart", env)
    try:
        fleet.start_redis()
        fleet.start_central(concurrency=2, name="central-restart")
        fleet.start_agent(IP, concurrency=1)

        def runs(command: str):
            out = manage("run", command, "--hosts", IP, env=env, timeout=60)
            if out.returncode != 0:
                return None
            job = ID_LINE.search(out.stdout).group(1)
            done = manage("check_task", job, "--wait", "--wait-timeout", "20", env=env)
            return done.returncode == 0 and command.split()[-1] in done.stdout

        wait_for(lambda: runs("echo before"), 90, "the first run", interval=1.0)

        fleet.stop("redis", signal.SIGKILL, timeout=5)
        time.sleep(5)  # everyone notices, and fails to reconnect at least once
        fleet.start_redis()

        assert wait_for(lambda: runs("echo after"), 90, "a run after the restart", interval=2.0)
        log = (fleet.logs / "central-restart.log").read_text()
        assert "Error on restarting" not in log and "results intake failed" not in log
    finally:
        fleet.stop_all()


def test_a_frozen_broker_fails_a_dispatch_in_seconds_and_job_and_tasks_agree(
    tmp_path, process_env, manage
):  # fmt: skip
    """SIGSTOP: the broker accepts connections (the kernel does) and answers nothing."""
    from cmdb.jobs.choices import HostTaskStateChoices as State
    from cmdb.jobs.models import Job
    from tests.support.factories import make_host

    env = {**process_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    fleet = Fleet(tmp_path / "frozen", env)
    make_host(IP, with_agent=False)
    try:
        redis = fleet.start_redis()
        redis.send_signal(signal.SIGSTOP)
        try:
            out = manage("run", "echo never", "--hosts", IP, env=env, timeout=60)
        finally:
            redis.send_signal(signal.SIGCONT)
        assert out.returncode == 3, out.stdout + out.stderr
        assert "broker unreachable" in out.stderr
        assert out.elapsed < 12  # CMDB_DISPATCH_TIMEOUT is 5: a hang check, not a speed test
        job = Job.objects.get()
        assert "broker unreachable" in job.dispatch_error
        [task] = job.host_tasks.all()
        assert task.state == State.ERROR and task.error.startswith("not dispatched")
    finally:
        fleet.stop_all()
