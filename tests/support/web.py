"""A real gunicorn serving the project on a free loopback port, as `make up` starts it."""

import contextlib
import urllib.error
import urllib.request
from pathlib import Path

from deploy.local import Fleet
from tests.support.fleet import free_port, wait_for


@contextlib.contextmanager
def served(env: dict, folder: Path, workers: int = 2):
    """Yields the server's URL; on leaving, stops it and fails if it logged a traceback."""
    port = free_port()
    web = Fleet(folder, env)
    proc = web.start_web(port, workers=workers)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((web.logs / "web.log").read_text())
        try:
            urllib.request.urlopen(f"{url}/api/", timeout=2)
        except urllib.error.HTTPError:
            return True  # 401: the app answers
        except OSError:
            return False
        return True

    wait_for(answering, 60, "gunicorn to answer", interval=0.2)
    try:
        yield url
    finally:
        web.stop_all()
    log = (web.logs / "web.log").read_text()
    assert "Traceback" not in log, errors_only(log)


#: The lines of a request answered as the schema says it may: thousands under a fuzzer.
ROUTINE = ("Bad Request: ", "Method Not Allowed: ", "Not Found: ", "Unauthorized: ")


def errors_only(log: str) -> str:
    """The server log without the routine 4xx lines, so that a 5xx's traceback shows."""
    return "\n".join(line for line in log.splitlines() if not line.startswith(ROUTINE))
