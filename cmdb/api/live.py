"""The API's live parts: a job's events as Server-Sent Events, a host task's kept output."""

import json
import logging
import re
import time

from django.conf import settings
from django.http import FileResponse, StreamingHttpResponse
from rest_framework.exceptions import APIException, NotFound, Throttled

from cmdb.jobs import kept, live
from cmdb.jobs.choices import HostTaskStateChoices as State

logger = logging.getLogger(__name__)
TERMINAL = {str(s) for s in State.terminal()}

E_NOT_KEPT = "this host task's output was not kept (run with --keep-output, or CMDB_KEEP_OUTPUT)"


BLOCK_MS = 1000
E_TOO_MANY = ("you have {most} event streams open already (CMDB_EVENTS_STREAMS_PER_USER): "
              "close one, or read the job's host tasks instead")  # fmt: skip
#: The event types the stream has (cmdb.jobs.live); anything else is not passed on.
KINDS = {"output", "task", "truncated"}


class KeptUnsafe(APIException):
    """The kept output's folder or file is not the server's alone (cmdb.jobs.kept._ours): it
    is not served, whatever it holds. Which path and owner is for the server's log only."""

    status_code = 503
    default_detail = ("this host task's kept output is not served: its folder on the server is "
                      "not the server's alone (the server's log says which; an operator must "
                      "fix the ownership of CMDB_OUTPUT_DIR)")  # fmt: skip
    default_code = "kept_output_unsafe"


#: A stream ID Redis takes: MS or MS-SEQ, each below 2**64 (19 digits are).
CURSOR = re.compile(r"\d{1,19}(-\d{1,19})?")


def cursor_of(request) -> str:
    given = request.GET.get("after") or request.headers.get("Last-Event-ID") or "0-0"
    if not CURSOR.fullmatch(given):
        return "0-0"
    return given


def stream_slot(user_id) -> str:
    """Take one of the user's CMDB["EVENTS_STREAMS_PER_USER"] concurrent event answers (each
    holds a web worker up to EVENTS_STREAM_SECONDS); its key, given back when the answer is
    closed; Throttled (429) when all are taken."""
    cfg = settings.CMDB
    most, ttl = cfg["EVENTS_STREAMS_PER_USER"], int(cfg["EVENTS_STREAM_SECONDS"]) + 30
    key = live.take_slot(user_id, most, ttl)
    if key is None:
        raise Throttled(wait=5, detail=E_TOO_MANY.format(most=most))
    return key


def events_response(job, task_ips: dict[str, str], unfinished: set[str], output: bool,
                    after: str, clock=time.monotonic, slot: str | None = None):  # fmt: skip
    """Server-Sent Events of ``job`` for the host tasks ``task_ips`` (task id: its host's IP, of
    those the reader may view; an event's own "host" is not trusted, the database's is):
    each event's id is its cursor; output only with ``output`` (jobs.view_output). The answer
    ends once each of the ``unfinished`` ones was stored in an end state (at once, after what
    the stream holds, for a job that has ended), or after CMDB["EVENTS_STREAM_SECONDS"]."""

    def events():
        end = clock() + settings.CMDB["EVENTS_STREAM_SECONDS"]
        cursor, waiting = after, set(unfinished)
        yield "retry: 1000\n\n"
        with live.reader() as client:
            while clock() < end:
                events = live.read(client, job.pk, cursor, block_ms=BLOCK_MS if waiting else None)
                if not events:
                    if not waiting:
                        return
                    yield ": idle\n\n"  # a comment: the connection is alive
                    continue
                for cursor, event in events:  # the last one: the next read's
                    kind, task = event.get("type"), event.get("task")
                    if kind not in KINDS or (kind != "truncated" and task not in task_ips):
                        continue
                    if kind in ("output", "truncated") and not output:
                        continue
                    if kind == "task" and event.get("state") in TERMINAL:
                        waiting.discard(task)
                    if task in task_ips:
                        event["host"] = task_ips[task]
                    elif kind == "truncated":  # the job's: not a host one may not view
                        event.pop("task", None)
                        event.pop("host", None)
                    yield f"id: {cursor}\nevent: {kind}\ndata: {json.dumps(event)}\n\n"

    response = StreamingHttpResponse(_Slotted(events(), slot), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def output_response(task, stream: str, actor):
    if not kept.kept_cap(task):
        raise NotFound(E_NOT_KEPT)
    try:
        f = kept.open_kept(task, stream)
    except FileNotFoundError:
        raise NotFound(E_NOT_KEPT) from None
    except PermissionError as exc:
        logger.error("kept output of %s not served: %s", task.task_id, exc)
        raise KeptUnsafe() from None
    kept.record_read(actor, task.job, [task], [stream])
    return FileResponse(f, content_type="application/octet-stream")


class _Slotted:
    """An answer's events that give the user's slot back when the answer is closed (Django
    closes it once sent, or when the client went away), even if never read."""

    def __init__(self, events, slot: str | None):
        self.events, self.slot = events, slot

    def __iter__(self):
        return self.events

    def close(self) -> None:
        self.events.close()
        if self.slot is not None:
            slot, self.slot = self.slot, None
            live.give_back(slot)
