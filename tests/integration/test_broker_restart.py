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
