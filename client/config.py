"""Where the thin client finds its server and token: CMDB_URL / CMDB_TOKEN, else the config
file (~/.config/cmdb/config, or $XDG_CONFIG_HOME/cmdb/config) that `cmdb login` wrote.

The token is a password: the file is created by fd, exclusively, never through a symlink,
mode 0600 from its first byte; a file that others may read is refused, not used, and so is a
folder that is not the user's or that others may write to (they could swap the file). The
token is sent over HTTPS only, or plain HTTP to this machine's own loopback."""

import contextlib
import json
import os
import stat
from typing import NamedTuple

E_NOT_LOGGED_IN = "not logged in: run `cmdb login URL` (or set CMDB_URL and CMDB_TOKEN)"
E_READABLE = ("{path} may be read by others (mode {mode:o}): it holds your token; "
              "`chmod 600 {path}` (or `cmdb login` again), nothing done")  # fmt: skip
E_NOT_MINE = "{path} is not a regular file of yours: nothing done"
E_FOLDER_NOT_MINE = (
    "{folder} (which holds your token) is not a folder of yours: remove it, or "
    "set XDG_CONFIG_HOME to one of yours, and `cmdb login` again; nothing done"
)
E_FOLDER_WRITABLE = (
    "{folder} (which holds your token) may be written to by others (mode "
    "{mode:o}): `chmod 700 {folder}`, nothing done"
)
E_PLAIN_HTTP = (
    "{url}: plain http would send your token unencrypted; use https://{rest} "
    "(http:// only to this machine's loopback: 127.0.0.1, ::1, localhost), "
    "nothing done"
)
E_SCHEME = "{url}: give the server's URL as https://HOST (or http:// to loopback), nothing done"
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


def check_url(url: str) -> str:
    """``url`` if the token may be sent to it: https, or http to loopback; else ConfigError."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ConfigError(E_SCHEME.format(url=url))
    if scheme == "http":
        netloc = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        host = netloc[1:].split("]", 1)[0] if netloc.startswith("[") else netloc.split(":")[0]
        parts = host.split(".")
        loopback = host.lower() == "localhost" or host == "::1" or (
            len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts))  # fmt: skip
        if not loopback:
            raise ConfigError(E_PLAIN_HTTP.format(url=url, rest=rest))
    return url


def check_folder(folder: str) -> None:
    """The config's folder must be the user's own and writable by them alone: anyone else
    who may write to it may replace the file (a server of theirs, to collect the token)."""
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(E_FOLDER_NOT_MINE.format(folder=folder))
    if info.st_mode & 0o022:
        raise ConfigError(E_FOLDER_WRITABLE.format(folder=folder,
                                                   mode=stat.S_IMODE(info.st_mode)))  # fmt: skip


def _read(where: str) -> dict:
    check_folder(os.path.dirname(where))
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
    return Config(check_url(str(url).rstrip("/")), str(token))


def save(config: Config, env=None) -> str:
    """Write the config: a new file beside the old (O_EXCL, 0600, no symlink followed),
    then renamed over it, so that a reader never sees half a token."""
    where = path(env)
    folder = os.path.dirname(where)
    check_url(config.url)
    check_folder(folder)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # the mode makedirs gives is the umask's to narrow
    check_folder(folder)
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
