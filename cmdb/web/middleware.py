"""Refuse a request body larger than any upload the server takes, before it is read."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from cmdb.jobs.services import E_TOO_LARGE

#: Room for the multipart framing and the other fields around the file.
MULTIPART_SLACK = 1 << 20


class UploadLimitMiddleware:
    """A push through the API or the admin larger than CMDB_MAX_UPLOAD_BYTES is answered 413
    when the client says how big it is, before Django spools hundreds of MB to disk (the
    service layer checks the file's own size too, for a body sent without a length)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.CMDB["MAX_UPLOAD_BYTES"]
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit + MULTIPART_SLACK:
            message = "nothing pushed: " + E_TOO_LARGE.format(limit=limit)
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": message}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
