"""Renderers for downloads: a client may ask for the bytes; errors still read as JSON."""

import json

from rest_framework.renderers import BaseRenderer


class BinaryRenderer(BaseRenderer):
    """Lets a client ask for application/octet-stream (a download); errors still read as JSON."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


class EventStreamRenderer(BinaryRenderer):
    """Lets a client (EventSource) ask for text/event-stream; errors still read as JSON."""

    media_type = "text/event-stream"
    format = "sse"


class TarRenderer(BinaryRenderer):
    media_type = "application/x-tar"
    format = "tar"
