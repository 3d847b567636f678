"""`python -m bench.signing`: what signing costs per host task message, on this machine.

The server signs once per host per dispatch (in the publishing loop); an agent verifies once
per message it receives. Spec as dispatch builds it for a command. Writes bench/out/signing.json.
"""

import json
import os
import statistics
import time
import uuid

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.topology import ROOT
from wire import names, signing
from wire.messages import CommandSpec

OUT = ROOT / "bench" / "out"
COUNT = int(os.environ.get("BENCH_SIGN_COUNT", "20000"))


def spec(ip: str) -> dict:
    return CommandSpec(job=str(uuid.uuid4()), host=ip, command="df -h", timeout=300,
                       reply_queue="cmdb.central.results").to_wire()  # fmt: skip


def per_message_us(fn, items, reps: int = 5) -> dict:
    """Microseconds per call of ``fn(item)`` over ``items``: median and min of ``reps`` passes."""
    runs = []
    for _ in range(reps):
        started = time.perf_counter()
        for item in items:
            fn(item)
        runs.append((time.perf_counter() - started) / len(items) * 1e6)
    return {"median_us": statistics.median(runs), "min_us": min(runs), "messages": len(items)}


def main() -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    deadline = int(time.time()) + 600
    messages = [(f"127.3.{i // 250}.{i % 250 + 1}", str(uuid.uuid4())) for i in range(COUNT)]
    messages = [(ip, task_id, spec(ip)) for ip, task_id in messages]
    name = names.RUN_COMMAND

    def sign(m):
        return signing.sign(key, name, m[0], m[1], deadline, m[2])

    signed = [(m, sign(m)) for m in messages]

    def verify(item):
        (ip, task_id, s), auth = item
        assert signing.verify(public, auth, name, ip, task_id, s) is None

    def encode(m):
        return signing.canonical(name, m[0], m[1], deadline, m[2])

    report = {
        "canonical": per_message_us(encode, messages),
        "sign": per_message_us(sign, messages),
        "verify": per_message_us(verify, signed),
        "cpus": os.cpu_count(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "signing.json").write_text(json.dumps(report, indent=2))
    for step in ("canonical", "sign", "verify"):
        r = report[step]
        print(f"{step:<9} {r['median_us']:7.1f} us per message (min {r['min_us']:.1f}, "
              f"{r['messages']} messages x 5)")  # fmt: skip
    dispatch_ms = report["sign"]["median_us"] * 1000 / 1000  # 1,000 hosts, in ms
    print(f"signing a dispatch to 1,000 hosts: {dispatch_ms:.0f} ms")
    print(f"written: {OUT / 'signing.json'}")


if __name__ == "__main__":
    main()
