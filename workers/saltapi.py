"""A small salt-api (rest_cherrypy) client on the standard library: the salt package stays out
of this project's environment. Each call carries the eauth credentials (no token to keep)."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request

E_PASSWORD_FILE = "salt-api password file {path}: {reason}"
E_AUTH = ("salt-api refused the credentials of user {user!r} (eauth {eauth}): HTTP {status}; "
          "check CMDB_SALT_API_USER, CMDB_SALT_API_EAUTH and the password file")  # fmt: skip
E_HTTP = "salt-api answered HTTP {status} {reason}"
E_CONNECT = "salt-api at {url} could not be reached: {reason}"
E_URL = ("salt-api URL {url!r}: {reason} (https is required unless salt-api is on loopback: "
         "the password travels with every call)")  # fmt: skip
E_ANSWER = "salt-api answered something that is not a Salt return: {text!r}"


class SaltApiError(Exception):
    """salt-api could not be used (unreachable, refused, or not understood); the message says
    which, and never holds the password."""


class SaltAuthError(SaltApiError):
    pass


def read_password(path: str) -> str:
    """The password in ``path``, read by fd: refused unless a regular file of ours that only we
    may read (as ssh refuses a private key others can read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SaltApiError(E_PASSWORD_FILE.format(path=path, reason=exc.strerror)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SaltApiError(E_PASSWORD_FILE.format(path=path, reason="not a regular file"))
        if st.st_uid != os.geteuid():
            reason = f"owned by uid {st.st_uid}, not by us (uid {os.geteuid()})"
            raise SaltApiError(E_PASSWORD_FILE.format(path=path, reason=reason))
        if st.st_mode & 0o077:
            reason = f"mode {stat.S_IMODE(st.st_mode):04o}, must be 0600"
            raise SaltApiError(E_PASSWORD_FILE.format(path=path, reason=reason))
        # Only the line end an editor adds: spaces may be part of a password.
        text = f.read(4096).decode()
        return text.removesuffix("\n").removesuffix("\r")


def check_url(url: str) -> str:
    """``url`` if the password may be sent to it: https, or http to a loopback address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme != "http" or not parts.hostname:
        raise SaltApiError(E_URL.format(url=url, reason="not an http(s) URL"))
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SaltApiError(E_URL.format(url=url, reason="plain http off loopback"))
    return url


def local(minion: str, fun, arg, timeout: float, kwarg=None) -> dict:
    """The lowstate of one `local` client call on exactly one minion. tgt_type list: the id is
    matched as it is (the default, glob, would run a task for one host on every minion "web*"
    or "web0[1-9]" matches)."""
    lowstate = {"client": "local", "tgt": [minion], "tgt_type": "list", "fun": fun,
                "arg": arg, "timeout": timeout}  # fmt: skip
    if kwarg:
        lowstate["kwarg"] = kwarg
    return lowstate


class SaltApi:
    def __init__(self, url: str, user: str, eauth: str, password: str):
        self.url, self.user, self.eauth = check_url(url.rstrip("/")), user, eauth
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
