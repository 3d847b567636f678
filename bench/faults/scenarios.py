"""The scenarios: each injects one fault into the suite's fleet and counts what it did.

A scenario is ``(ctx, tally, run)``, called once per run; it starts the agents it needs (each
scenario has hosts of its own, 127.14.<n>.x, so nothing left by one reaches another) and
leaves the central worker and Redis running (``Context.heal`` makes sure of it).
"""

import signal
import time
from dataclasses import dataclass, field

import redis
from django.conf import settings

from bench.faults.harness import (
    SETTLE,
    FaultFleet,
    Watch,
    manage,
    mount_tmpfs,
    node_name,
    token,
    unmount,
    wait_until,
)
from bench.faults.tally import Sent, Tally
from cmdb.hosts.models import Host
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.dispatch import CommandRequest, dispatch_command
from cmdb.jobs.models import HostTask, Job


@dataclass
class Context:
    fleet: FaultFleet
    app: object
    watch: Watch
    short: bool
    #: Agents up now, by IP.
    agents: set[str] = field(default_factory=set)
    #: Seconds the last agents took from their start to answering a ping.
    agent_startup_s: float = 4.0

    # -- processes ----------------------------------------------------------------------------
    def ping(self, nodes: list[str], timeout: float) -> bool:
        def answered():
            try:
                replies = self.app.control.ping(destination=nodes, timeout=1.0)
            except Exception:  # the broker is down or frozen: not yet
                return False
            return set(nodes) <= {name for reply in replies for name in reply}

        return bool(wait_until(answered, timeout, interval=0.3))

    def start_central(self) -> bool:
        self.fleet.start_central()
        return self.ping([node_name("central")], 60)

    def start_agents(self, ips: list[str], concurrency: int = 2, env: dict | None = None) -> bool:
        started = time.monotonic()
        for ip in ips:
            self.fleet.start_agent(ip, concurrency, env)
            self.agents.add(ip)
        ok = self.ping([f"agent@{ip}" for ip in ips], 60)
        if ok:
            self.agent_startup_s = time.monotonic() - started
        accepted = wait_until(
            lambda: Host.objects.accepted().filter(ip__in=ips).count() == len(ips), 30, 0.2
        )
        return ok and bool(accepted)

    def registered(self, ips: list[str]) -> None:
        """The hosts are in the inventory, accepted: an agent of theirs has started once (a
        scenario that dispatches to a host whose agent is down needs it)."""
        missing = [ip for ip in ips if not Host.objects.accepted().filter(ip=ip).exists()]
        if missing:
            self.start_agents(missing, concurrency=1)

    def stop_agent(self, ip: str, sig: int = signal.SIGTERM) -> None:
        if sig == signal.SIGKILL:
            self.fleet.kill(f"agent-{ip}")
        else:
            self.fleet.stop(f"agent-{ip}", sig)
        self.agents.discard(ip)

    def stop_agents(self) -> None:
        for ip in list(self.agents):
            self.stop_agent(ip)

    def heal(self) -> None:
        """After a scenario: every group thawed, Redis and the central worker running."""
        for name in list(self.fleet.frozen):
            self.fleet.thaw(name)
        if self.fleet.pid("redis") is None:
            self.fleet.start_redis()
        if self.fleet.pid("central") is None:
            self.start_central()
        self.fleet.kill_commands()

    # -- jobs -----------------------------------------------------------------------------------
    def dispatch(self, ips: list[str], body: str = "", code: int = 0, timeout: int = 60,
                 reach: int = 30, stdout_bytes: int | None = None) -> list[Sent]:  # fmt: skip
        mark = token()
        job = dispatch_command(
            CommandRequest(self.fleet.command(mark, body, code), ips, timeout=timeout,
                           reach_timeout=reach, requested_by="faults"),
            self.app,
        )  # fmt: skip
        tasks = list(HostTask.objects.filter(job=job).values_list("task_id", "ip"))
        self.watch.add(t for t, _ in tasks)
        return [Sent(task_id, ip, mark, code, stdout_bytes) for task_id, ip in tasks]

    def ended(self, sent: list[Sent]) -> int:
        ids = [s.task_id for s in sent]
        return HostTask.objects.filter(task_id__in=ids, state__in=State.terminal()).count()

    def wait_ended(self, sent: list[Sent], timeout: float) -> bool:
        return bool(wait_until(lambda: self.ended(sent) == len(sent), timeout, 0.2))

    def state(self, sent: Sent) -> str:
        return HostTask.objects.get(task_id=sent.task_id).state

    def deadline(self, sent: Sent) -> float:
        return HostTask.objects.get(task_id=sent.task_id).reach_deadline.timestamp()

    def wait_started(self, sent: Sent, timeout: float) -> bool:
        """Until its command runs (its marker) and the server says running."""
        return bool(wait_until(
            lambda: self.fleet.marks(sent.token).get(sent.ip)
            and self.state(sent) == State.RUNNING, timeout, 0.1))  # fmt: skip


def ips(n: int, count: int) -> list[str]:
    return [f"127.14.{n}.{i + 1}" for i in range(count)]


# -- the scenarios -------------------------------------------------------------------------------


def central_kill(ctx: Context, tally: Tally, run: int) -> None:
    """kill -9 the central worker during a burst of results, start it again: every command
    that ran must be stored with its true result."""
    hosts = ips(1, 3)
    if run == 0:
        ctx.start_agents(hosts, concurrency=2)
    jobs = 20 if ctx.short else 100
    reach = 10 if ctx.short else 15
    total = jobs * len(hosts)
    sent: list[Sent] = []
    killed = None

    def kill():
        tally.figure("stored_when_killed", f"{ctx.ended(sent)}/{total}")
        ctx.fleet.kill("central")
        return time.monotonic()

    for i in range(jobs):
        # Some exit non-zero: the true result is the exit code, not just "it ran".
        sent += ctx.dispatch(hosts, code=3 if i % 5 == 4 else 0, timeout=10, reach=reach)
        # In the middle of the burst: a quarter stored, the rest still being dispatched, run
        # and reported (while no central worker is there to take it).
        if killed is None and i % 5 == 4 and ctx.ended(sent) >= total // 4:
            killed = kill()
    if killed is None:
        wait_until(lambda: ctx.ended(sent) >= total // 4, 20, 0.05)
        killed = kill()
    time.sleep(max(0.0, killed + 2 - time.monotonic()))
    ctx.start_central()
    ctx.wait_ended(sent, reach + SETTLE)
    before = len(tally.lost_ids)
    tally.judge(ctx.fleet, ctx.watch, sent)
    where_messages_are(ctx, tally, tally.lost_ids[before:], [settings.CMDB["RESULTS_QUEUE"]],
                       "lost_result_is")  # fmt: skip


def where_messages_are(ctx: Context, tally: Tally, task_ids: list[str], queues: list[str],
                       figure: str) -> None:  # fmt: skip
    """Where messages naming these tasks are in Redis: still in one of ``queues``, taken but
    never acknowledged (kombu's unacked hash, given back only after the visibility timeout),
    or nowhere (gone for good)."""
    if not task_ids:
        return
    client = redis.Redis.from_url(ctx.fleet.redis_url)
    try:
        queued = b"".join(m for q in queues for m in client.lrange(q, 0, -1))
        unacked = b"".join(client.hvals("unacked"))
    finally:
        client.close()
    for task_id in task_ids:
        key = task_id.encode()
        tally.figure(figure, "queued" if key in queued else "unacked" if key in unacked else "gone")


def _late_back(run: int) -> float:
    # 1.2 to 2.5 s after the deadline, spread over the runs: clear of LATE_SLACK (1 s), so
    # that a start at the edge of it does not decide the count.
    return 1.2 + 1.3 * ((run * 0.37) % 1.0)


def agent_late(ctx: Context, tally: Tally, run: int) -> None:
    """The agent away until 1-2.5 s past its tasks' reach deadline, then back: nothing may
    start after the deadline (plus slack) or after the task ended. Runs take turns: the agent
    frozen (SIGSTOP), stopped, stopped with the central worker down too (no sweep, no cancel
    mark: only the agent's own deadline check stands)."""
    (ip,) = ips(2, 1)
    variant = ("frozen", "stopped", "stopped, central down")[run % 3]
    if ip not in ctx.agents:
        ctx.start_agents([ip], concurrency=2)
    reach = 3
    back = _late_back(run)
    if variant == "frozen":
        ctx.fleet.freeze(f"agent-{ip}")
    else:
        ctx.stop_agent(ip)
        if variant.endswith("central down"):
            ctx.fleet.stop("central")
    sent = ctx.dispatch([ip], reach=reach) + ctx.dispatch([ip], reach=reach)
    deadline = ctx.deadline(sent[0])
    if variant == "frozen":
        time.sleep(max(0.0, deadline + back - time.time()))
        ctx.fleet.thaw(f"agent-{ip}")
        came_back = time.time()
    else:
        # Started so that it consumes again about ``back`` s past the deadline.
        time.sleep(max(0.0, deadline + back - ctx.agent_startup_s - time.time()))
        ctx.start_agents([ip], concurrency=2)
        came_back = time.time()  # it answers pings: it consumes
    tally.figure("agent_back_after_deadline_s", round(came_back - deadline, 1))
    tally.figure("variant", variant)
    if ctx.fleet.pid("central") is None:
        time.sleep(5)  # what the agent does with no server to stop it
        ctx.start_central()
    ctx.wait_ended(sent, SETTLE)
    time.sleep(2)  # a late result turning a verdict into something else
    tally.judge(ctx.fleet, ctx.watch, sent)


def agent_back_after_sweep(ctx: Context, tally: Tally, run: int) -> None:
    """The agent back after the monitor ended its task unreachable: it must stay
    unreachable (never run, never "cancelled": nobody cancelled it)."""
    (ip,) = ips(3, 1)
    ctx.registered([ip])
    if ip in ctx.agents:
        ctx.stop_agent(ip)
    sent = ctx.dispatch([ip], reach=2)
    wait_until(lambda: ctx.state(sent[0]) == State.UNREACHABLE, SETTLE, 0.2)
    time.sleep(1)
    ctx.start_agents([ip], concurrency=1)
    time.sleep(5)  # it takes the message, refuses it, reports the refusal
    tally.figure("states_seen", "/".join(ctx.watch.states(sent[0].task_id)))
    tally.judge(ctx.fleet, ctx.watch, sent)


def agent_frozen(ctx: Context, tally: Tally, run: int) -> None:
    """SIGSTOP the agent mid-command, SIGCONT it later: when it was found lost, and whether
    the result it sends once thawed is kept (without turning the verdict into another)."""
    (ip,) = ips(4, 1)
    if ip not in ctx.agents:
        ctx.start_agents([ip], concurrency=1)
    frozen_for = 12 if ctx.short else 30
    sent = ctx.dispatch([ip], body="sleep 2; ", timeout=120, reach=30)
    if not ctx.wait_started(sent[0], 20):
        tally.note("the command did not start")
    ctx.fleet.freeze(f"agent-{ip}")
    frozen = time.time()
    time.sleep(frozen_for)
    ctx.fleet.thaw(f"agent-{ip}")
    lost = ctx.watch.first(sent[0].task_id, {State.LOST})
    tally.figure("lost_after_s", round(lost - frozen, 1) if lost else None)
    # The thawed agent sends what it holds: wait for it to reach the server.
    wait_until(lambda: ctx.state(sent[0]) in State.reported(), 15, 0.2)
    time.sleep(2)
    tally.figure("states_seen", "/".join(ctx.watch.states(sent[0].task_id)))
    tally.judge(ctx.fleet, ctx.watch, sent)


def agent_kill(ctx: Context, tally: Tally, run: int) -> None:
    """kill -9 the agent mid ``sleep``: seconds until the task is lost, whether the command's
    tree outlived its agent, and whether the agent started again kills it."""
    (ip,) = ips(5, 1)
    if ip not in ctx.agents:
        ctx.start_agents([ip], concurrency=1)
    # 45 s, not 30: the tree must still be there when the restarted agent has had its chance.
    sent = ctx.dispatch([ip], body="sleep 45; ", timeout=120, reach=30)
    if not ctx.wait_started(sent[0], 20):
        tally.note("the command did not start")
    time.sleep(1)
    ctx.stop_agent(ip, signal.SIGKILL)
    killed = time.time()
    time.sleep(1)
    survived = bool(ctx.fleet.marker_processes(sent[0].token))
    tally.figure("tree_survived_agent", survived)
    # The watch's own record: when the state was first seen, not when this loop looked.
    lost = wait_until(lambda: ctx.watch.first(sent[0].task_id, {State.LOST}), 40, 0.1)
    tally.figure("lost_after_s", round(lost - killed, 1) if lost else None)
    ctx.start_agents([ip], concurrency=1)
    time.sleep(3)
    left = ctx.fleet.marker_processes(sent[0].token)
    tally.figure("tree_left_after_restart", bool(left))
    for proc in left:
        proc.kill()
    task = HostTask.objects.get(task_id=sent[0].task_id)
    tally.figure("lost_error", task.error[:160])
    tally.judge(ctx.fleet, ctx.watch, sent)


def redis_restart(ctx: Context, tally: Tally, run: int) -> None:
    """kill -9 Redis with ~50 tasks in flight, start it again (append-only file, same folder
    and port): seconds until a new run works, and how the tasks in flight ended."""
    hosts = ips(6, 3)
    if run == 0:
        ctx.start_agents(hosts, concurrency=2)
    # Time for all of them (3 agents x 2 at 0.5 s, after a restart of a few seconds), and
    # for the stranded to end by their deadline within the bounded wait.
    reach = 20 if ctx.short else 25
    sent: list[Sent] = []
    for _ in range(17):
        sent += ctx.dispatch(hosts, body="sleep 0.5; ", timeout=30, reach=reach)
    wait_until(lambda: ctx.ended(sent) >= 6, 10, 0.05)
    tally.figure("ended_when_killed", ctx.ended(sent))
    ctx.fleet.kill("redis")
    time.sleep(2)
    ctx.fleet.start_redis()
    restarted = time.time()
    probes = 0
    ok_at = None
    while ok_at is None and time.time() - restarted < 60:
        probes += 1
        try:
            probe = ctx.dispatch(hosts[:1], timeout=10, reach=10)
        except Exception as exc:  # the broker or the database answers again only in time
            tally.note(f"probe {probes}: {type(exc).__name__}: {str(exc)[:100]}")
            time.sleep(1)
            continue
        if wait_until(lambda p=probe: ctx.state(p[0]) == State.OK, 10, 0.1):
            ok_at = time.time()
    tally.figure("run_ok_after_s", round(ok_at - restarted, 1) if ok_at else None)
    ctx.wait_ended(sent, reach + SETTLE)
    states: dict[str, int] = {}
    stranded = []
    for s in sent:
        state = ctx.state(s)
        states[state] = states.get(state, 0) + 1
        # Every agent was up, consuming, within a reach timeout that leaves them time for all
        # of it: a task that never ran was taken (prefetched) and dropped, not "never
        # delivered", which is all `unreachable` may mean (decision 10).
        if state == State.UNREACHABLE and not ctx.fleet.marks(s.token).get(s.ip):
            stranded.append(s.task_id)
    where_messages_are(ctx, tally, stranded, hosts, "stranded_message_is")
    stranded = len(stranded)
    tally.counts["wrong"] += stranded
    tally.figure("unreachable_agents_up", stranded)
    tally.figure("end_states", states)
    tally.judge(ctx.fleet, ctx.watch, sent)


def frozen_broker_dispatch(ctx: Context, tally: Tally, run: int) -> None:
    """SIGSTOP Redis, time ``manage.py run`` until it exits (3: broker down), SIGCONT: the job
    and its tasks must say the same thing."""
    (ip,) = ips(7, 1)
    if ip not in ctx.agents:
        ctx.start_agents([ip], concurrency=1)
    # Today's `run` takes ~91 s (three 30 s socket timeouts): the short run does not wait
    # for it all (it counts as stuck), the full one does.
    cap = 30 if ctx.short else 150
    mark = token()
    ctx.fleet.freeze("redis")
    try:
        code, seconds, out = manage(
            ctx.fleet.env, "run", ctx.fleet.command(mark), "--hosts", ip,
            "--reach-timeout", "10", "--timeout", "30", timeout=cap,
        )  # fmt: skip
    finally:
        ctx.fleet.thaw("redis")
    tally.figure("run_exit_s", round(seconds, 1))
    tally.figure("run_exit_code", code)
    if code is None:
        tally.counts["stuck"] += 1
        tally.note(f"run had not exited after {cap} s; killed")
    elif code != 3:
        tally.counts["wrong"] += 1
        tally.note(f"run exited {code}, not 3: {out.strip()[-200:]}")
    job = Job.objects.filter(command__contains=mark).first()
    if job is None:
        tally.note("no job recorded")
        return
    tasks = list(HostTask.objects.filter(job=job).values_list("task_id", "ip"))
    sent = [Sent(t, i, mark) for t, i in tasks]
    ctx.watch.add(t for t, _ in tasks)
    ctx.wait_ended(sent, SETTLE)
    job.refresh_from_db()
    not_sent = bool(job.dispatch_error)
    for s in sent:
        task = HostTask.objects.get(task_id=s.task_id)
        tally.figure("job_and_task", f"job {'not dispatched' if not_sent else 'dispatched'}; "
                                     f"task {task.state}: {task.error[:80]}")  # fmt: skip
        # "Not dispatched" and a task blaming its agent ("is the agent running?") disagree.
        if not_sent and "agent" in task.error and task.state == State.UNREACHABLE:
            tally.counts["wrong"] += 1
            tally.note(f"job says {job.dispatch_error[:80]!r}; its task says {task.error[:80]!r}")
        if not_sent and ctx.fleet.marks(mark):
            tally.counts["wrong"] += 1
            tally.note("the job says not dispatched, yet its command ran")
    tally.judge(ctx.fleet, ctx.watch, sent,
                unrun_ok=frozenset({State.UNREACHABLE, State.ERROR, State.CANCELLED}))  # fmt: skip


SPOOL_SIZE = "64k"
OUTPUT_BYTES = 200_000


def spool_full(ctx: Context, tally: Tally, run: int) -> None:
    """An agent whose spool folder (CMDB_SPOOL_DIR) is a 64 KiB tmpfs runs a command that
    writes 200,000 bytes: the task must say its output is incomplete."""
    (ip,) = ips(8, 1)
    spool = ctx.fleet.run_dir / "spool-tmpfs"
    if ip not in ctx.agents:
        why = mount_tmpfs(spool, SPOOL_SIZE)
        if why:
            tally.skipped = why
            return
        ctx.start_agents([ip], concurrency=1, env={"CMDB_SPOOL_DIR": str(spool)})
    mark_len = 33  # the token line the command prints after the payload
    sent = ctx.dispatch([ip], body=f"head -c {OUTPUT_BYTES} /dev/zero | tr '\\0' a; ",
                        timeout=60, reach=30, stdout_bytes=OUTPUT_BYTES + mark_len)  # fmt: skip
    ctx.wait_ended(sent, SETTLE)
    task = HostTask.objects.get(task_id=sent[0].task_id)
    tally.figure("truncated_flag", task.stdout_truncated)
    tally.judge(ctx.fleet, ctx.watch, sent)


def spool_cleanup(ctx: Context) -> None:
    unmount(ctx.fleet.run_dir / "spool-tmpfs")


#: name -> (scenario, runs in the full mode).
SCENARIOS = {
    "central_kill": (central_kill, 5),
    "agent_late": (agent_late, 3),
    "agent_back_after_sweep": (agent_back_after_sweep, 3),
    "agent_frozen": (agent_frozen, 2),
    "agent_kill": (agent_kill, 3),
    "redis_restart": (redis_restart, 3),
    "frozen_broker_dispatch": (frozen_broker_dispatch, 2),
    "spool_full": (spool_full, 2),
}
