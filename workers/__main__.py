"""Start the agent: find this host's IP, then run a Celery worker on exactly that queue.

    python -m workers [--ip 10.0.3.55] [--concurrency 4] [--loglevel info]

Equivalent to `celery -A workers worker -Q <ip>` with the options a large fleet needs.
"""

import argparse
import os
import sys

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
        # Gossip and mingle make every worker talk to every other (N^2 at fleet size, celery#5079);
        # heartbeats stay on: the server uses them to tell a dead agent from a slow command.
        "--without-gossip",
        "--without-mingle",
        "--optimization",
        "fair",
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ip",
        help="queue to consume (default: $CMDB_AGENT_IP, else the "
        "address of the default-route interface)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(os.environ.get("CMDB_AGENT_CONCURRENCY", "4")),
        help="commands run at once (default: $CMDB_AGENT_CONCURRENCY or 4)",
    )
    parser.add_argument("--loglevel", default=os.environ.get("CMDB_AGENT_LOGLEVEL", "info"))
    args, extra = parser.parse_known_args(argv)
    try:
        ip = resolve_agent_ip(args.ip)
    except (ValueError, RuntimeError) as exc:
        parser.exit(2, f"agent: {exc}\n")
    from workers.celery import app

    app.worker_main(build_worker_argv(ip, args.concurrency, args.loglevel, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
