"""Start the agent: find this host's IP, then run a Celery worker on exactly that queue.

    python -m workers [--pubkey /etc/cmdb-agent/signing_key.pub] [--ip 10.0.3.55]
                      [--concurrency 4] [--loglevel info]
    python -m workers --fingerprint     # this agent's own key, to compare with `keys list`

Equivalent to `celery -A workers worker -Q <ip>` with the options a large fleet needs.
"""

import argparse
import os
import sys

from wire import signing
from workers.celery import agent, app
from workers.identity import resolve_agent_ip


def build_worker_argv(ip: str, concurrency: int, loglevel: str, extra: list[str]) -> list[str]:
    return [
        "worker",
        "--queues",
        ip,
        # One node name per host, so heartbeats and results name the host they come from.
        "--hostname",
        f"agent@{ip}",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        # Gossip and mingle make every worker talk to every other (N^2 at fleet size, celery#5079).
        "--without-gossip",
        "--without-mingle",
        # Celery's own heartbeat is unsigned and believed by nobody (cmdb.jobs.monitor): the
        # server tells a dead agent from a slow command by the signed one (workers.alive),
        # which needs no second event every 2 s per host on the broker.
        "--without-heartbeat",
        "--optimization",
        "fair",
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    settings = agent.settings
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ip",
        help="queue to consume (default: $CMDB_AGENT_IP, else the "
        "address of the default-route interface)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=settings.concurrency,
        help="commands run at once (default: $CMDB_AGENT_CONCURRENCY or 4)",
    )
    parser.add_argument("--loglevel", default=settings.loglevel)
    parser.add_argument(
        "--pubkey",
        default=settings.pubkey,
        help="the server's public key (PEM), to verify every message with "
        "(default: $CMDB_AGENT_PUBKEY; required)",
    )
    parser.add_argument(
        "--fingerprint",
        action="store_true",
        help="print this agent's own key's fingerprint (made if there is none yet) and exit: "
        "compare it with `manage.py keys list` before you accept the key",
    )
    args, extra = parser.parse_known_args(argv)
    if args.fingerprint:
        try:
            key = agent.own_key()
        except (signing.SigningKeyError, OSError) as exc:
            parser.exit(2, f"agent: {exc}\n")
        print(signing.key_fingerprint(key.public_key()))
        return 0
    # No key, no agent: there is no unsigned mode to fall back to. An agent that ran unsigned
    # messages would obey anyone who can write to the broker, and one that refused them all
    # would only look alive; `make up` and the tests always provide the key.
    if not args.pubkey:
        parser.exit(2, f"agent: {signing.E_NO_PUBKEY}\n")
    try:
        signing.load_public_key(args.pubkey)
    except signing.SigningKeyError as exc:
        parser.exit(2, f"agent: {exc}\n")
    agent.use_pubkey(os.path.abspath(args.pubkey))
    try:
        ip = resolve_agent_ip(args.ip, settings.ip)
    except (ValueError, RuntimeError) as exc:
        parser.exit(2, f"agent: {exc}\n")
    app.worker_main(build_worker_argv(ip, args.concurrency, args.loglevel, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
