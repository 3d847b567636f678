"""A small salt-api (rest_cherrypy) client on the standard library: the salt package stays out
of this project's environment. Each call carries the eauth credentials (no token to keep)."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request

E_PASSWORD_FILE = "salt-api password file {path}: {reason}"
E_AUTH = ("salt-api refused the credentials of user {user!r} (eauth {eauth}): HTTP {status}; "
          "check CMDB_SALT_API_USER, CMDB_SALT_API_EAUTH and the password file")  # fmt: skip
E_HTTP = "salt-api answered HTTP {status} {reason}"
E_CONNECT = "salt-api at {url} could not be reached: {reason}"
E_ANSWER = "salt-api answered something that is not a Salt return: {text!r}"


class SaltApiError(Exception):
    """salt-api could not be used (unreachable, refused, or not understood); the message says
    which, and never holds the password."""


class SaltAuthError(SaltApiError):
    pass


def read_password(path: str) -> str:
    """The password in ``path``, read by fd: refused unless a regular file only its owner may
    read (as ssh refuses a private key others can read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SaltApiError(E_PASSWORD_FILE.format(path=path, reason=exc.strerror)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SaltApiError(E_PASSWORD_FILE.format(path=path, reason="not a regular file"))
        if st.st_mode & 0o077:
            reason = f"mode {stat.S_IMODE(st.st_mode):04o}, must be 0600"
            raise SaltApiError(E_PASSWORD_FILE.format(path=path, reason=reason))
        return f.read(4096).decode().strip()


class SaltApi:
    def __init__(self, url: str, user: str, eauth: str, password: str):
        self.url, self.user, self.eauth = url.rstrip("/"), user, eauth
        self._password = password

    def __repr__(self) -> str:  # never the password
        return f"SaltApi({self.url!r}, user={self.user!r}, eauth={self.eauth!r})"

    def run(self, lowstate: dict, timeout: float) -> object:
        """The first return of one lowstate chunk (POST /run)."""
        body = {"eauth": self.eauth, "username": self.user, "password": self._password,
                **lowstate}  # fmt: skip
        request = urllib.request.Request(
            self.url + "/run", data=json.dumps([body]).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise SaltAuthError(E_AUTH.format(user=self.user, eauth=self.eauth,
                                                  status=exc.code)) from None  # fmt: skip
            raise SaltApiError(E_HTTP.format(status=exc.code, reason=exc.reason)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SaltApiError(E_CONNECT.format(url=self.url, reason=reason)) from None
        try:
            return json.loads(text)["return"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise SaltApiError(E_ANSWER.format(text=text[:200])) from None
