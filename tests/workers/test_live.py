"""The agent's live output (workers.live) around the real runner: short commands send
nothing, longer ones send their output while they run, bounded, or whole when it is kept."""

import base64
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire.messages import Output
from workers import live, runner


def run(command: str, keep: int = 0, timeout: float = 30, **more):
    sent: list[tuple[float, Output]] = []
    sink = live.LiveOutput(lambda chunk: sent.append((time.monotonic(), chunk)), "t-1",
                           "127.0.1.1", "agent@127.0.1.1", keep=keep, **more)  # fmt: skip
    result = runner.run_command(command, timeout=timeout, live=sink)
    return result, sent, time.monotonic()


def stream(sent, name: str) -> bytes:
    out = b""
    for _, chunk in sent:
        at, data = getattr(chunk, f"{name}_at"), base64.b64decode(getattr(chunk, name))
        assert at >= len(out)  # never backwards; a gap is output skipped
        out = out.ljust(at, b"?") + data
    return out


def test_a_short_command_sends_no_chunk():
    result, sent, _ = run("hostname; echo err >&2")
    assert result.outcome == "ok" and result.stdout.head
    assert sent == []


def test_a_slow_command_sends_its_output_while_it_runs():
    result, sent, ended = run("echo one; sleep 1; echo two >&2; sleep 1; echo three")
    assert result.outcome == "ok"
    assert stream(sent, "stdout") == b"one\nthree\n"
    assert stream(sent, "stderr") == b"two\n"
    first = next(at for at, c in sent if base64.b64decode(c.stdout) == b"one\n")
    assert ended - first > 1.5  # "one" went out while the command still ran
    assert [c.seq for _, c in sent] == list(range(1, len(sent) + 1))


def test_fast_output_is_bounded_per_flush_but_kept_output_is_whole():
    command = "sleep 0.3; seq 1 300000; sleep 0.3"
    want = b"".join(b"%d\n" % i for i in range(1, 300001))
    _, sent, _ = run(command)
    assert all(len(base64.b64decode(c.stdout)) <= live.CHUNK_BYTES for _, c in sent)
    assert len(stream(sent, "stdout")) == len(want)  # the end is there, the middle skipped
    _, kept, _ = run(command, keep=1 << 30)
    assert stream(kept, "stdout") == want


def test_kept_output_is_sent_no_faster_than_the_rate():
    # 3.1 MB of output at once, kept, at 1 MiB/s: some 2 s of sending (a message of 512 KiB
    # may go before the check, one more as the first), not all at the first flush (0.3 s);
    # every byte still comes.
    command = "seq 1 460000"
    want = b"".join(b"%d\n" % i for i in range(1, 460001))
    started = time.monotonic()
    result, kept, _ = run(command, keep=1 << 30, rate=1 << 20)
    assert result.outcome == "ok"
    assert stream(kept, "stdout") == want
    span = kept[-1][0] - started
    assert span > (len(want) - 2 * live.KEEP_CHUNK_BYTES) / (1 << 20) * 0.9, span


def test_chunks_verify_against_the_agents_key_only():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    chunk = Output(task_id="t-1", host="127.0.1.1", seq=1, stdout="eA==").signed(key).to_wire()
    assert Output.verify(key.public_key(), chunk)
    assert not Output.verify(other.public_key(), chunk)
    assert not Output.verify(key.public_key(), {**chunk, "stdout": "eQ=="})
