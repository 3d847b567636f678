"""Run-once claims kept on the host itself: a task id runs here at most once.

The agent also claims each task id in Redis, but Redis is the broker, and every host holds
credentials for it: whoever takes one host could capture a genuine signed message for another,
delete its claim key and queue it again, and it would verify and run a second time for as long
as its signature is valid. A file per task id, in a folder only the agent writes, cannot be
deleted that way (the folder is $CMDB_AGENT_STATE_DIR/claims, workers.config). O_CREAT|O_EXCL
makes the claim atomic across the pool's processes.

Claims are kept for KEEP seconds: longer than any message the agent accepts stays valid
(wire.signing: a deadline at most MAX_VALIDITY ahead, plus the clock slack on both sides).
"""

import logging
import os
import re
import time
from pathlib import Path

from wire import signing

logger = logging.getLogger(__name__)

KEEP = 2 * (signing.MAX_VALIDITY + 2 * signing.CLOCK_SLACK)
#: Seconds between sweeps of expired claims, per process.
PRUNE_EVERY = 600
#: What Celery task ids look like (uuids); anything else could name a path.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

E_BAD_ID = "task id {task_id!r} is not a task id"


class Ledger:
    """The claims of one host's agent (the processes of its pool share the folder)."""

    def __init__(self, folder: Path, keep: float = KEEP, clock=time.time):
        self.folder, self.keep, self.clock = Path(folder), keep, clock
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.pruned = 0.0

    def claim(self, task_id: str) -> bool:
        """True the first time ``task_id`` is claimed, False after. OSError when the claim
        cannot be recorded: the caller must then not run the task."""
        if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
            raise ValueError(E_BAD_ID.format(task_id=task_id))
        if self.clock() - self.pruned > PRUNE_EVERY:
            self.prune()
        try:
            fd = os.open(self.folder / task_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def prune(self) -> int:
        """Forget claims older than ``keep``; returns how many."""
        self.pruned = now = self.clock()
        forgotten = 0
        for entry in os.scandir(self.folder):
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > self.keep:
                    os.unlink(entry.path)
                    forgotten += 1
            except FileNotFoundError:  # another process of the pool was faster
                continue
        return forgotten
