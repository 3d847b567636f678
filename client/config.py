"""Where the thin client finds its server and token: CMDB_URL / CMDB_TOKEN, else the config
file (~/.config/cmdb/config, or $XDG_CONFIG_HOME/cmdb/config) that `cmdb login` wrote.

The token is a password: the file is created by fd, exclusively, never through a symlink,
mode 0600 from its first byte; a file that others may read is refused, not used."""

import contextlib
import json
import os
import stat
from typing import NamedTuple

E_NOT_LOGGED_IN = "not logged in: run `cmdb login URL` (or set CMDB_URL and CMDB_TOKEN)"
E_READABLE = ("{path} may be read by others (mode {mode:o}): it holds your token; "
              "`chmod 600 {path}` (or `cmdb login` again), nothing done")  # fmt: skip
E_NOT_MINE = "{path} is not a regular file of yours: nothing done"
E_BAD_FILE = "{path} is not a config `cmdb login` wrote ({why}): log in again"


class ConfigError(Exception):
    """The config cannot be used; the message says why and what to do."""


class Config(NamedTuple):
    url: str
    token: str


def path(env=None) -> str:
    # os.path, not pathlib: pathlib is a fifth of the client's start-up.
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or "~", ".config")
    return os.path.join(os.path.expanduser(base), "cmdb", "config")


def _read(where: str) -> dict:
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:  # a symlink (ELOOP) or unreadable
        raise ConfigError(E_NOT_MINE.format(path=where)) from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise ConfigError(E_NOT_MINE.format(path=where))
        if info.st_mode & 0o077:
            raise ConfigError(E_READABLE.format(path=where, mode=stat.S_IMODE(info.st_mode)))
        try:
            data = json.loads(f.read(65536))
        except ValueError as exc:
            raise ConfigError(E_BAD_FILE.format(path=where, why="not JSON")) from exc
    if not isinstance(data, dict):
        raise ConfigError(E_BAD_FILE.format(path=where, why="not an object"))
    return data


def load(env=None) -> Config:
    """The server and token to use: the environment's, over the file's."""
    env = os.environ if env is None else env
    url, token = env.get("CMDB_URL", ""), env.get("CMDB_TOKEN", "")
    if not (url and token):
        saved = _read(path(env))
        url, token = url or saved.get("url", ""), token or saved.get("token", "")
    if not (url and token):
        raise ConfigError(E_NOT_LOGGED_IN)
    return Config(str(url).rstrip("/"), str(token))


def save(config: Config, env=None) -> str:
    """Write the config: a new file beside the old (O_EXCL, 0600, no symlink followed),
    then renamed over it, so that a reader never sees half a token."""
    where = path(env)
    os.makedirs(os.path.dirname(where), mode=0o700, exist_ok=True)
    temporary = os.path.join(os.path.dirname(where), f".config.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
            json.dump({"url": config.url, "token": config.token}, f)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, where)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return where
