"""An emulated agent: one process answering for many hosts, through the real agent's code.

    python -m bench.emulated.agent HOSTS_FILE READY_FILE

EMULATED, and said so wherever its figures appear. What is real, per message: the envelope
as kombu's Redis transport stores it, the server's signature checked for the host's queue
(workers.guard), the run-once claims on disk and in Redis, the record of the running command
(workers.tasks._run), the report signed with the agent's key and published to the reply queue
as the link callback the server attached (Celery's task protocol). What is not: Celery's
consumer (one BRPOP per message over this process's queues, which at thousands of queues per
process measures kombu, not us: here pipelined RPOPs over every queue), and the command, which
is an in-process answer (workers.runner.run_command replaced: the host's name, exit 0, at once).
No heartbeats and no registration: the bench accepts this process's key for its hosts itself.
"""

import base64
import json
import os
import signal
import socket
import sys
import time
import uuid
from pathlib import Path

from celery._state import _task_stack

from wire import names, signing
from wire.messages import Outcome, Stream
from workers import runner, tasks
from workers.celery import agent, app

#: Queues per pipelined sweep.
SWEEP_CHUNK = 1000
#: Seconds a blocking pop waits before looking again (and at the stop signal).
BLOCK = 1.0
#: Seconds between sweeps that found little: an idle sweep of thousands of queues is not free
#: for Redis.
PAUSE = 0.02


def answer(command: str, **_) -> runner.RunResult:
    """The command, as if it had run: what `hostname` prints, at once."""
    now = time.time()
    return runner.RunResult(outcome=Outcome.OK, exit_code=0,
                            stdout=Stream.text(socket.gethostname() + "\n"),
                            stderr=Stream.text(""), started_at=now, finished_at=now,
                            duration=0.0, error="", pid=os.getpid())  # fmt: skip


BODIES = {names.RUN_COMMAND: tasks._run, names.COLLECT_FACTS: tasks._collect}


class Emulator:
    def __init__(self, hosts: list[str]):
        self.hosts = hosts
        self.node = f"emulated@{socket.gethostname()}:{os.getpid()}"
        self.conn = app.connection_for_write()
        self.client = self.conn.default_channel.client
        self.producer = app.amqp.Producer(self.conn.default_channel)
        self.handled = 0

    def take(self) -> list[tuple[str, bytes]]:
        """What is on this process's queues now: a blocking pop for the first, then a sweep."""
        got = []
        for start in range(0, len(self.hosts), SWEEP_CHUNK):
            chunk = self.hosts[start : start + SWEEP_CHUNK]
            with self.client.pipeline(transaction=False) as pipe:
                for host in chunk:
                    pipe.rpop(host)
                got += [(h, raw) for h, raw in zip(chunk, pipe.execute(), strict=True) if raw]
        if got:
            return got
        popped = self.client.brpop(self.hosts, timeout=BLOCK)
        return [(popped[0].decode(), popped[1])] if popped else []

    def handle(self, queue: str, raw: bytes, results: list) -> None:
        envelope = json.loads(raw)
        headers, props = envelope["headers"], envelope["properties"]
        args, _kwargs, embed = json.loads(base64.b64decode(envelope["body"]))
        task = app.tasks.get(headers["task"])
        body = BODIES.get(headers["task"])
        if task is None or body is None:
            return
        # The registered task with its request as Celery's worker makes it: the queue the
        # message says it was sent to (the guard checks it against this process's hosts), and
        # the server's header as an attribute.
        routing = {"routing_key": props["delivery_info"]["routing_key"]}
        task.push_request(id=headers["id"], hostname=self.node, delivery_info=routing,
                          **{signing.HEADER: headers.get(signing.HEADER)})  # fmt: skip
        _task_stack.push(task)
        try:
            report = tasks._host_task(task, args[0], body,
                                      announce_late=task.name == names.RUN_COMMAND)  # fmt: skip
        finally:
            _task_stack.pop()
            task.pop_request()
        for callback in embed.get("callbacks") or []:
            results.append((callback, report))

    def publish(self, results: list) -> None:
        """The link callbacks, one message each as Celery's tracer sends them (to the queue
        the callback names, through the anonymous exchange), in pipelined batches."""
        with self.producer.batch(max_size=500):
            for callback, report in results:
                queue = callback["options"].get("queue") or agent.settings.results_queue
                headers, properties, body, _ = app.amqp.as_task_v2(
                    str(uuid.uuid4()), callback["task"], args=[report, *callback["args"]],
                    kwargs={}, origin=self.node, argsrepr="[report]", kwargsrepr="{}",
                )  # fmt: skip
                self.producer.publish(body, exchange="", routing_key=queue, declare=[],
                                      serializer="json", headers=headers, delivery_mode=2,
                                      **properties)  # fmt: skip

    def run(self, ready: Path, stopping) -> None:
        ready.write_text(str(os.getpid()))
        while not stopping():
            batch = self.take()
            results: list = []
            for queue, raw in batch:
                self.handle(queue, raw, results)
            self.publish(results)
            self.handled += len(batch)
            if 0 < len(batch) < len(self.hosts) // 100:
                time.sleep(PAUSE)


def main() -> None:
    hosts_file, ready = Path(sys.argv[1]), Path(sys.argv[2])
    hosts = hosts_file.read_text().split()
    runner.run_command = answer
    agent.started_worker(hosts)
    agent.own_key()  # made (or read) before anything arrives
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    profile = os.environ.get("BENCH_EMULATED_PROFILE")
    if profile:  # where this process's time goes, for the bench's own tuning
        import cProfile

        with cProfile.Profile() as prof:
            Emulator(hosts).run(ready, lambda: bool(stop))
        prof.dump_stats(f"{profile}.{os.getpid()}")
        return
    Emulator(hosts).run(ready, lambda: bool(stop))


if __name__ == "__main__":
    main()
