"""Runs a command (the suite) against a throwaway PostgreSQL cluster: ``make test``'s second pass.

    python -m tests.support.postgres python -m pytest ...

The cluster is Debian's ``initdb``/``postgres`` in a temp dir, listening on a unix socket in
that dir only (no TCP port at all), with trust for whoever can open the socket: the dir is
0700, so only its owner and root can. Nothing is left behind, no password exists, and no
service needs starting by hand. As root the server runs as the ``postgres`` user (PostgreSQL
refuses to run as root). ``CMDB_TEST_POSTGRES=postgres://...`` uses that server instead (its
user needs CREATEDB: Django makes and drops ``test_<name>`` there).

The command gets ``DATABASE_URL``; the suite's subprocesses then share Django's test database
(``test_cmdb``) through it (tests/conftest.py).
"""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

#: The database the URL names; Django's test database is ``test_`` + this.
NAME = "cmdb"
#: The superuser initdb makes; the suite connects as it.
USER = "cmdb"
E_NO_POSTGRES = (
    "PostgreSQL's server binaries (initdb, postgres) were not found: install Debian's "
    "postgresql package (`apt-get install postgresql`; deploy/testdeps.sh does as root), "
    "set CMDB_TEST_PG_BINDIR to their folder, or CMDB_TEST_POSTGRES to a server's URL"
)


def find_bindir() -> Path | None:
    """$CMDB_TEST_PG_BINDIR, the PATH's initdb, or Debian's newest /usr/lib/postgresql/N/bin."""
    candidates = [os.environ.get("CMDB_TEST_PG_BINDIR")]
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    debian = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    candidates += [str(Path(p).parent) for p in sorted(debian, key=_version, reverse=True)]
    for folder in filter(None, candidates):
        if all((Path(folder) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _version(path: str) -> tuple[int, ...]:
    digits = Path(path).parent.parent.name
    return tuple(int(n) for n in digits.split(".") if n.isdigit())


def url(socket_dir: Path, name: str = NAME) -> str:
    """The URL of database ``name`` over the socket in ``socket_dir`` (dj-database-url takes a
    percent-encoded path as the host)."""
    return f"postgres://{USER}@{quote(str(socket_dir), safe='')}/{name}"


@contextlib.contextmanager
def cluster():
    """A running cluster in a new temp dir; yields its URL, stops and removes it after."""
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit(E_NO_POSTGRES)
    # As root: initdb and postgres refuse to run as root, so the cluster is postgres' own.
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="cmdb-pg-"))
    data, log = base / "data", base / "postgres.log"
    run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []} if owner else {}
    try:
        if owner:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            [bindir / "initdb", "-D", data, "-U", USER, "--auth=trust", "--encoding=UTF8",
             # C.UTF-8 sorts by code point as SQLite does; a test relying on a locale's
             # collation would then still pass here and fail in production: none does.
             "--locale=C.UTF-8", "--no-sync", "--no-instructions"],
            check=True, stdout=subprocess.DEVNULL, cwd=base, **run_as,
        )  # fmt: skip
        # No TCP at all (listen_addresses empty); the socket is in the 0700 dir. A test
        # cluster need not survive a crash: no fsync. The suite's processes (central workers'
        # threads, gunicorn, manage.py) each keep connections: room for them all.
        options = (f"-c listen_addresses='' -k {base} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=300")  # fmt: skip
        subprocess.run(
            [bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"],
            check=True, stdout=subprocess.DEVNULL, cwd=base, **run_as,
        )  # fmt: skip
        try:
            yield url(base)
        finally:
            subprocess.run(
                [bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                stdout=subprocess.DEVNULL, cwd=base, **run_as,
            )  # fmt: skip
    except subprocess.CalledProcessError:
        if log.exists():
            sys.stderr.write(log.read_text())
        raise
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("usage: python -m tests.support.postgres COMMAND [ARG...]")
    # make's or CI's SIGTERM must stop the cluster too: leave through the finally clauses.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    given = os.environ.get("CMDB_TEST_POSTGRES")
    with contextlib.nullcontext(given) if given else cluster() as database:
        print(f"PostgreSQL for the suite: {database}", flush=True)
        return subprocess.call(argv, env={**os.environ, "DATABASE_URL": database})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
