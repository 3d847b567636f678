"""The REST API, as the thin client speaks it: JSON over HTTP(S) with a token, the standard
library only. http.client, not urllib.request: a third less to import (`cmdb` must start
fast), and one connection kept for every request of a command."""

import http.client
import json
import urllib.parse
from collections.abc import Iterator

#: Seconds before a request that got no answer is given up.
TIMEOUT = 30
E_UNREACHABLE = "cannot reach the server at {url}: {why} (is it running? is CMDB_URL right?)"
E_TOKEN = ("the server refused the token ({detail}): `cmdb login {url}` again, "
           "or check CMDB_TOKEN")  # fmt: skip
E_NOT_JSON = "the server at {url} answered {status} with something that is not the API's JSON"


class Unreachable(Exception):
    """No HTTP answer at all: refused, timed out, name unknown, TLS failed."""


class APIError(Exception):
    """An HTTP answer that is an error; ``body`` is its JSON (a dict) when it had one."""

    def __init__(self, status: int, body, message: str):
        self.status, self.body = status, body
        super().__init__(message)

    @property
    def problems(self) -> list[str]:
        """The reasons in the body: "detail", or each field's ("hosts: unknown host ...")."""
        return problems_of(self.body) or [str(self)]


def problems_of(body) -> list[str]:
    if isinstance(body, dict):
        if set(body) <= {"detail", "job"} and "detail" in body:
            return problems_of(body["detail"])
        out = []
        for field, value in body.items():
            for reason in problems_of(value):
                out.append(reason if field in ("non_field_errors", "detail")
                           else f"{field}: {reason}")  # fmt: skip
        return out
    if isinstance(body, list):
        return [p for item in body for p in problems_of(item)]
    return [] if body is None else [str(body)]


class Streamed:
    """An answer being read line by line, and the connection it came on (closed together)."""

    def __init__(self, connection: http.client.HTTPConnection, answer):
        self.connection, self.answer = connection, answer

    def readline(self) -> bytes:
        return self.answer.readline()

    def close(self) -> None:
        self.connection.close()  # the answer with it


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self._open, self._used, self._prefix = None, False, ""

    def _connection(self) -> http.client.HTTPConnection:
        if self._open is None:
            parts = urllib.parse.urlsplit(self.url)
            kind = {"http": http.client.HTTPConnection,
                    "https": http.client.HTTPSConnection}.get(parts.scheme)  # fmt: skip
            if kind is None or not parts.hostname:
                raise Unreachable(E_UNREACHABLE.format(url=self.url, why="not an http(s) URL"))
            self._open = kind(parts.hostname, parts.port, timeout=self.timeout)
            self._used = False
            self._prefix = parts.path.rstrip("/")
        return self._open

    def _target(self, path: str) -> str:
        """The request's target on this server: a path, or an absolute link the API gave
        (tasks_next, next) made a path again."""
        if "://" in path:
            parts = urllib.parse.urlsplit(path)
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return self._prefix + path

    def request(self, method: str, path: str, body=None, params: dict | None = None):
        """The JSON answer (None for 204); APIError for an error answer, Unreachable for
        none."""
        self._connection()
        target = self._target(path)
        if params:
            query = {k: v for k, v in params.items() if v not in (None, "", [])}
            if query:
                sep = "&" if "?" in target else "?"
                target += sep + urllib.parse.urlencode(query, doseq=True)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            raw, status = self._send(method, target, data, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(E_UNREACHABLE.format(url=self.url, why=exc)) from None
        if status >= 400:
            raise self._error(status, raw)
        if status == 204 or not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise APIError(status, None, E_NOT_JSON.format(url=self.url, status=status)) from None

    def _send(self, method: str, target: str, data, headers) -> tuple[bytes, int]:
        """One exchange on the kept connection. A GET on a reused one the server has closed
        meanwhile (its keep-alive ran out) is asked again on a new one; anything else is
        not, lest a dispatch be sent twice."""
        if method != "GET" and self._used:
            self._close()  # a change goes on a fresh connection: never one that may be stale
        reused = self._used
        try:
            connection = self._connection()
            connection.request(method, target, body=data, headers=headers)
            answer = connection.getresponse()
            raw = answer.read()
        except (OSError, http.client.HTTPException):
            self._close()
            if reused and method == "GET":
                return self._send(method, target, data, headers)
            raise
        self._used = True
        if answer.will_close:
            self._close()
        return raw, answer.status

    def stream(self, path: str, headers: dict, timeout: float):
        """An answer to read as it comes (Server-Sent Events), on a connection of its own: the
        kept one stays free for the requests made while it streams. APIError for an error
        answer, Unreachable for none; the caller closes it."""
        self._connection()  # the URL checked, and its path prefix known
        parts = urllib.parse.urlsplit(self.url)
        kind = (http.client.HTTPSConnection if parts.scheme == "https"
                else http.client.HTTPConnection)  # fmt: skip
        connection = kind(parts.hostname, parts.port, timeout=timeout)
        headers = {**headers, **({"Authorization": f"Token {self.token}"} if self.token else {})}
        try:
            connection.request("GET", self._target(path), headers=headers)
            answer = connection.getresponse()
            if answer.status >= 400:
                raw = answer.read()
                connection.close()
                raise self._error(answer.status, raw)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise Unreachable(E_UNREACHABLE.format(url=self.url, why=exc)) from None
        return Streamed(connection, answer)

    def _close(self) -> None:
        if self._open is not None:
            self._open.close()
        self._open = None

    def _error(self, status: int, raw: bytes) -> APIError:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if body is None:
            return APIError(status, None, E_NOT_JSON.format(url=self.url, status=status))
        if status == 401:
            detail = problems_of(body)
            message = E_TOKEN.format(detail="; ".join(detail), url=self.url)
            return APIError(status, body, message)
        return APIError(status, body, "; ".join(problems_of(body)) or f"HTTP {status}")

    def get(self, path: str, **params):
        return self.request("GET", path, params=params)

    def post(self, path: str, body=None):
        return self.request("POST", path, body)

    def patch(self, path: str, body):
        return self.request("PATCH", path, body)

    def delete(self, path: str):
        return self.request("DELETE", path)

    def pages(self, path: str, **params) -> Iterator[dict]:
        """Every item of a paginated list, page after page (the API's ``next`` links)."""
        page = self.get(path, **params)
        while True:
            yield from page.get("results", [])
            if not page.get("next"):
                return
            page = self.get(page["next"])

    def job_tasks(self, job: dict) -> list[dict]:
        """Every host task of a job document shown: its first ones, then tasks_next's pages."""
        tasks = list(job.get("tasks") or [])
        if job.get("tasks_next"):
            tasks.extend(self.pages(job["tasks_next"]))
        return tasks
