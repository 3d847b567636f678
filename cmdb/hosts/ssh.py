"""The server's side of the SSH mode: its client key, the gateway's report key, host keys.

No password anywhere: the gateway logs in with the server's key only (CMDB_SSH_KEY), and
connects only to a host whose key `hosts trust` recorded (trust on first use, by an operator).
"""

import asyncio
import os
import secrets
import stat
from pathlib import Path

import asyncssh
from django.conf import settings

from wire import signing

E_SSH_KEY_MISSING = (
    "the SSH key CMDB_SSH_KEY={path} does not exist: make it with `ssh-keygen -t ed25519 -N '' "
    "-f {path}` (only the default path is made without asking)"
)
E_SSH_KEY_OPEN = "the SSH key {path} is readable by others (mode {mode:o}): chmod 600 it"
E_SSH_KEY_OWNER = (
    "the SSH key {path} is not a file of this user's (owner uid {uid}): "
    "a key someone else can write is not this server's"
)
E_REFUSED = "connection refused ({ip}:{port})"
E_TIMEOUT = "timed out connecting to {ip}:{port} after {timeout:g} s"
E_CONNECT = "could not connect to {ip}:{port}: {reason}"


class SSHKeyError(Exception):
    pass


def client_key_path() -> Path:
    return Path(settings.CMDB["SSH_KEY"])


def client_key() -> asyncssh.SSHKey:
    """The server's SSH client key; made once (0600) at the default path when CMDB_SSH_KEY is
    unset, as the signing key is. A configured path that is missing is a mistake, not made."""
    path = client_key_path()
    if not path.exists():
        if not settings.CMDB["SSH_KEY_CREATE"]:
            raise SSHKeyError(E_SSH_KEY_MISSING.format(path=path))
        _create(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            # Someone else's file is someone else's key: they could log in as the gateway.
            raise SSHKeyError(E_SSH_KEY_OWNER.format(path=path, uid=st.st_uid))
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SSHKeyError(E_SSH_KEY_OPEN.format(path=path, mode=stat.S_IMODE(st.st_mode)))
        return asyncssh.import_private_key(f.read())


def _create(path: Path) -> None:
    # Written aside and linked into place: several processes starting at once make one key.
    # The folder private to us when we make it; a random name, made new (O_EXCL), so that
    # nobody's file or link planted under a name we would pick is written through.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="fleet-cmdb gateway")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def public_line() -> str:
    """The authorized_keys line of the server's SSH key."""
    return client_key().export_public_key().decode().strip()


def gateway_key():
    """The Ed25519 key the gateway signs its reports with (made once, 0600)."""
    return signing.generate_key_pair(settings.CMDB["GATEWAY_KEY"])


def gateway_pem() -> str:
    """What ssh-mode hosts have as their accepted key: the gateway speaks for them."""
    return signing.public_pem(gateway_key()).decode()


def gateway_fingerprint() -> str:
    return signing.key_fingerprint(gateway_key().public_key())


def presented_key(ip: str, port: int, timeout: float | None = None) -> asyncssh.SSHKey:
    """The host key ``ip:port`` presents now; ConnectionError with the reason if it cannot
    be asked."""
    timeout = timeout or settings.CMDB["SSH_CONNECT_TIMEOUT"]
    where = {"ip": ip, "port": port}

    async def ask():
        return await asyncio.wait_for(asyncssh.get_server_host_key(ip, port, config=[]), timeout)

    try:
        return asyncio.run(ask())
    except ConnectionRefusedError:
        raise ConnectionError(E_REFUSED.format(**where)) from None
    except TimeoutError:
        raise ConnectionError(E_TIMEOUT.format(**where, timeout=timeout)) from None
    except (OSError, asyncssh.Error) as exc:
        raise ConnectionError(E_CONNECT.format(**where, reason=str(exc))) from None


def line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def fingerprint(key_line: str) -> str:
    return asyncssh.import_public_key(key_line).get_fingerprint()
