"""Start a gateway: `python -m gateway [--salt] [--node NAME] [--loglevel info]`.

It reads the inventory (the server's database: the same settings as manage.py) for the
ssh-mode hosts (or, with --salt, the salt-mode ones) and serves their queues; hosts added
later are picked up within seconds.
"""

import argparse
import os
import sys

import django


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
    parser.add_argument("--salt", action="store_true",
                        help="salt-mode hosts, through CMDB_SALT_API_URL")  # fmt: skip
    parser.add_argument("--node", default="", help="the worker's node name (gateway@<host>)")
    parser.add_argument("--loglevel", default="info")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cmdb.settings")
    django.setup()
    # Models only once Django is set up.
    if args.salt:
        from gateway import salt

        salt.main(args.node, args.loglevel)
    else:
        from gateway import worker

        worker.main(args.node, args.loglevel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
