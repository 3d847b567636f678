"""What a dead agent leaves running, found and ended by the next one.

A command runs in a session of its own (workers.runner), so an agent killed with SIGKILL, or
one whose host lost power in the middle, leaves its commands running with nobody to report
them. Each running command has a record in $CMDB_AGENT_STATE_DIR/running (one small JSON file
per task: its session id, the start time of its shell, and the agent process that ran it),
written as soon as the shell exists and removed when the command has ended. An agent that
starts finds the records of agents that are no longer alive, kills those sessions, and reports
each task to the server as its agent's death (cmdb.jobs.lifecycle: lost, "killed by the
restarted agent").

The start time guards against pid reuse: a session is killed only if its leader is still the
process that was recorded. What left the session (setsid in the command) is out of reach; so it
is for the runner's own timeout and cancel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: Seconds to wait for a killed session's processes to be gone.
KILL_WAIT = 5.0

E_KILLED = ("its agent (pid {agent_pid}) died while it ran; the restarted agent killed what was "
            "left of the command ({count} process(es) of session {sid}) at {when}")  # fmt: skip
E_ENDED = ("its agent (pid {agent_pid}) died while it ran; the command had ended by the time the "
           "agent restarted ({when}), and its result died with the agent")  # fmt: skip


@dataclass(frozen=True)
class Orphan:
    """A command whose agent is gone, as the next agent found and left it."""

    task_id: str
    host: str
    agent_pid: int
    killed: int  # how many processes were killed; 0: none was left
    error: str


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class Records:
    """The running-command records of one host's agent (its pool's processes share them)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, task_id: str) -> Path:
        if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
            raise ValueError(f"task id {task_id!r} is not a task id")
        return self.folder / task_id

    def add(self, task_id: str, host: str, pid: int, agent_pid: int) -> None:
        """Record that ``pid`` (a session leader) runs ``task_id`` for agent ``agent_pid``."""
        record = {"task_id": task_id, "host": host, "sid": pid, "started": _started(pid),
                  "agent_pid": agent_pid, "agent_started": _started(agent_pid)}  # fmt: skip
        fd = os.open(self.path(task_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                     0o600)  # fmt: skip
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)

    def remove(self, task_id: str) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            os.unlink(self.path(task_id))

    def reap(self, alive=None, now=time.time) -> list[Orphan]:
        """End the sessions of agents that are no longer alive; the orphans found."""
        alive = alive or _agent_alive
        found = []
        for entry in os.scandir(self.folder):
            try:
                with open(entry.path, encoding="utf-8") as f:
                    record = json.load(f)
                task_id, host = record["task_id"], record["host"]
                sid, agent_pid = int(record["sid"]), int(record["agent_pid"])
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("unreadable running-command record %s removed", entry.name)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            if alive(agent_pid, record.get("agent_started")):
                continue  # another live agent's (its own pool, or a second agent: its business)
            killed = kill_session(sid, record.get("started"))
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now()))
            text = E_KILLED if killed else E_ENDED
            error = text.format(agent_pid=agent_pid, count=killed, sid=sid, when=when)
            logger.warning("task %s: %s", task_id, error)
            found.append(Orphan(task_id, host, agent_pid, killed, error))
            self.remove(task_id)
        return found


def _agent_alive(pid: int, started: float | None) -> bool:
    """The agent process ``pid`` that started at ``started`` still runs (a pid reused since,
    this process's own after a reboot or in a container, is another process)."""
    now = _started(pid)
    return now is not None and (started is None or abs(now - started) < 1.0)


def _ours() -> set[int]:
    """This process and its ancestors: an agent started from inside a dead agent's command (a
    restart by hand, nohup) must not kill itself."""
    ours, proc = set(), psutil.Process()
    while proc is not None:
        ours.add(proc.pid)
        try:
            proc = proc.parent()
        except psutil.Error:
            break
    return ours


def kill_session(sid: int, leader_started: float | None) -> int:
    """SIGKILL every process of session ``sid``; how many there were. Nothing when the leader
    is gone and its pid may have been reused (a session whose leader exited is still killed:
    its members still carry the session id, which no new process gets while they live)."""
    leader = _started(sid)
    if leader is not None and (leader_started is None or abs(leader - leader_started) >= 1.0):
        return 0  # the pid is someone else's now (or cannot be told from someone else's)
    members, ours = [], _ours()
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) == sid and proc.pid not in ours:
                members.append(proc)
    for proc in members:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(members, timeout=KILL_WAIT)
    return len(members)
