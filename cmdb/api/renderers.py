"""Renderers for downloads: a client may ask for the bytes; errors still read as JSON."""

import json

from rest_framework.renderers import BaseRenderer

from client import export


class BinaryRenderer(BaseRenderer):
    """Lets a client ask for application/octet-stream (a download); errors still read as JSON."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


class TarRenderer(BinaryRenderer):
    media_type = "application/x-tar"
    format = "tar"


class CSVRenderer(BaseRenderer):
    """A job's host tasks as CSV (client.export): the rows the view gives, one per host."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if not isinstance(data, list):  # an error's detail
            return json.dumps(data).encode()
        return export.to_csv(data).encode()


class JSONLinesRenderer(CSVRenderer):
    media_type = "application/jsonl"
    format = "jsonl"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if not isinstance(data, list):
            return json.dumps(data).encode()
        return export.to_jsonl(data).encode()
