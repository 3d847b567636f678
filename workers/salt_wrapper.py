"""What a salt minion runs for one command: a small /bin/sh wrapper (pure text; no Python on
the host beyond the minion's own).

Salt trims any return over its event bus's max_event_size (1 MiB by default) to the string
"VALUE_TRIMMED", and its cmd.run_all timeout kills only the shell it started. So the host does
what the agent's runner does: the command runs under setsid in a process group of its own,
each stream is spooled to a folder of its own, a watchdog kills the whole group at the
deadline, a cancel (KILL_SCRIPT) kills it on demand, and only head and tail travel back,
base64 so that bytes that are not UTF-8 survive.

Answer: a line "R" (ran), "T" (timed out) or "C" (cancelled); then per stream a line
"<name> <total bytes>" and one of base64 (whole) or two (head, tail); the exit status is the
command's. Exit 125 with a line "N <why>": no spool folder on the host, nothing ran.
"""

from __future__ import annotations

import base64
import re
import shlex

from wire.messages import Stream

#: Each of head and tail at most this many bytes in salt mode: four parts, base64, stay well
#: under Salt's 1 MiB.
MAX_PART = 128 << 10
NO_SPOOL = 125
_TAG = re.compile(r"[A-Za-z0-9-]{1,64}")

#: Where each command's spool folder is made, by `mktemp -d` (0700, a fresh random name):
#: /tmp is shared, and a fixed name there (a per-user root, say) is one that another local
#: user can take first, to refuse us every command or to plant what a cancel acts on.
SPOOL = "/tmp"
#: The answer's first line when the wrapper could not make its folder.
NO_SPOOL_LINE = "N "

WRAPPER = """d=$(mktemp -d {spool}/cmdb-salt.{tag}.XXXXXX 2>/dev/null) || {{
  echo "N mktemp -d in "{spool}" failed"; exit 125; }}
if [ -L "$d" ] || [ ! -d "$d" ] || [ ! -O "$d" ] || ! chmod 0700 "$d"; then
  echo "N $d is not a folder of ours with mode 0700"; exit 125
fi
trap 'rm -rf "$d"' EXIT
setsid /bin/sh -c {command} >"$d/o" 2>"$d/e" </dev/null &
p=$!
echo "$p" >"$d/pgid"
setsid /bin/sh -c 'sleep "$1"; mkdir "$2/timeout"; kill -s KILL -- -"$3"' _ {seconds} "$d" "$p" \
  >/dev/null 2>&1 &
w=$!
wait "$p"; rc=$?
kill -s KILL -- -"$w" 2>/dev/null
kill -s KILL -- -"$p" 2>/dev/null
if [ -e "$d/cancelled" ]; then echo C; elif [ -e "$d/timeout" ]; then echo T; else echo R; fi
for s in o e; do
  n=$(wc -c <"$d/$s")
  echo "$s $n"
  if [ "$n" -le {whole} ]; then base64 <"$d/$s" | tr -d '\\n'
  else head -c {head} "$d/$s" | base64 | tr -d '\\n'; printf ' '
    tail -c {tail} "$d/$s" | base64 | tr -d '\\n'; fi
  echo
done
exit $rc"""

#: Ends a wrapped command's whole process group, and says so in its folder first. Only the
#: task's folders that are ours (so made by a wrapper of ours, 0700: nobody else wrote in
#: them), not symlinks, with a pgid that is a number above 1; the mark is made with mkdir,
#: which never follows a symlink.
KILL_SCRIPT = """for d in {spool}/cmdb-salt.{tag}.*; do
  [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && [ -f "$d/pgid" ] && [ ! -L "$d/pgid" ] || continue
  g=$(head -c 20 "$d/pgid")
  case "$g" in ''|*[!0-9]*|0*|1) continue;; esac
  mkdir "$d/cancelled" 2>/dev/null; kill -s KILL -- -"$g" && echo killed
done"""


def _tag(task_id: str) -> str:
    if not _TAG.fullmatch(task_id or ""):
        raise ValueError(f"not a task id: {task_id!r}")
    return task_id


def wrapped(command: str, task_id: str, seconds: int, head: int, tail: int,
            spool: str = SPOOL) -> str:  # fmt: skip
    """``spool``: tests only (the folder spool folders are made in)."""
    return WRAPPER.format(command=shlex.quote(command), tag=_tag(task_id), seconds=int(seconds),
                          whole=head + tail, head=head, tail=tail,
                          spool=shlex.quote(spool))  # fmt: skip


def kill_script(task_id: str, spool: str = SPOOL) -> str:
    """``spool``: tests only, as for wrapped()."""
    return KILL_SCRIPT.format(tag=_tag(task_id), spool=shlex.quote(spool))


def no_spool(stdout: str) -> str | None:
    """Why the wrapper could not make its spool folder (and ran nothing), or None."""
    if not stdout.startswith(NO_SPOOL_LINE):
        return None
    return stdout[len(NO_SPOOL_LINE) :].split("\n", 1)[0].strip()[:300]


def unwrap(stdout: str) -> tuple[str, Stream, Stream]:
    """(how it ended: R, T or C; stdout; stderr) from the wrapper's answer; ValueError (or
    IndexError, binascii.Error) if it is not one."""
    lines = stdout.split("\n")
    how = lines[0].strip()
    if how not in ("R", "T", "C"):
        raise ValueError(f"no R/T/C line: {lines[0][:40]!r}")
    streams = {}
    for i in (1, 3):
        name, total = lines[i].split(" ")
        parts = [base64.b64decode(p, validate=True) for p in lines[i + 1].split(" ")]
        text = [p.decode("utf-8", errors="replace") for p in parts]
        truncated = len(parts) > 1
        streams[name] = Stream(text[0], text[1] if truncated else "", int(total), truncated)
    return how, streams["o"], streams["e"]
