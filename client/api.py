"""The REST API, as the thin client speaks it: JSON over HTTP(S) with a token, the standard
library only (nothing to import but what Python starts with: `cmdb` must start fast)."""

import json
import urllib.error
import urllib.parse
import urllib.request
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


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _absolute(self, path: str) -> str:
        # A link the API gave (tasks_next) is already absolute.
        return path if "://" in path else self.url + path

    def request(self, method: str, path: str, body=None, params: dict | None = None):
        """The JSON answer (None for 204); APIError for an error answer, Unreachable for
        none."""
        url = self._absolute(path)
        if params:
            query = {k: v for k, v in params.items() if v not in (None, "", [])}
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query, doseq=True)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as answer:
                raw = answer.read()
                status = answer.status
        except urllib.error.HTTPError as exc:
            raise self._error(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise Unreachable(E_UNREACHABLE.format(url=self.url, why=why)) from None
        if status == 204 or not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise APIError(status, None, E_NOT_JSON.format(url=self.url, status=status)) from None

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
