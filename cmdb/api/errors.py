"""The API's errors: the service layer's, mapped once to status codes, and the ones HTTP adds.

Refused      400  {field: [reasons]} (the CLI's "targets" is the body's "hosts"); more hosts
                  than may be reached without confirming is {"confirm": [...]} (NeedsConfirmation)
NotPermitted 403  {field: [reasons]}: the targets outside the requester's grants, by name
TooLarge     413  {"detail": ...}
NotFound     404
CannotSign   503  {"detail": ...}: nothing was recorded or sent
BrokerDown   503  {"detail": ..., "job": id when the job was recorded}
"""

from django.http import JsonResponse
from django.views.defaults import page_not_found
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler

from cmdb.jobs.exceptions import (
    BrokerDown,
    CannotSign,
    NotPermitted,
    Refused,
    ServiceError,
    TooLarge,
)
from cmdb.jobs.exceptions import NotFound as NoSuchId

#: Request fields per field of a Refused (the CLI says targets where the API says hosts).
REQUEST_FIELDS = {"targets": "hosts"}
E_CANNOT_SIGN = "nothing dispatched: this server cannot sign messages for agents: {exc}"
E_TOO_LARGE = "nothing pushed: {exc}"


class Gone(APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "gone"
    default_code = "gone"


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request too large"
    default_code = "too_large"


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "service unavailable"
    default_code = "service_unavailable"


def by_request_field(by_field: dict[str, list[str]]) -> dict[str, list[str]]:
    """A Refused's problems keyed by the request's field names."""
    errors: dict[str, list[str]] = {}
    for name, messages in by_field.items():
        errors.setdefault(REQUEST_FIELDS.get(name, name), []).extend(messages)
    return errors


def flat_errors(errors: dict) -> dict[str, list[str]]:
    """Validation errors as field -> messages, whatever their depth: a bad item of a list
    (``hosts: {0: [...]}``) becomes "item 0: ..." under its field, as documented."""

    def messages(value, prefix: str = "") -> list[str]:
        if isinstance(value, dict):
            return [m for key, v in value.items() for m in messages(v, f"{prefix}item {key}: ")]
        if isinstance(value, list):
            return [m for v in value for m in messages(v, prefix)]
        return [f"{prefix}{value}"]

    return {field: messages(value) for field, value in errors.items()}


def as_api_error(exc: ServiceError) -> APIException:
    if isinstance(exc, TooLarge):
        return PayloadTooLarge(E_TOO_LARGE.format(exc=exc))
    if isinstance(exc, NotPermitted):
        return PermissionDenied(by_request_field(exc.by_field))
    if isinstance(exc, Refused):
        return ValidationError(by_request_field(exc.by_field))
    if isinstance(exc, NoSuchId):
        return NotFound(str(exc))
    if isinstance(exc, CannotSign):
        # The server's own configuration, not the request: nothing was recorded or sent.
        return ServiceUnavailable(E_CANNOT_SIGN.format(exc=exc))
    if isinstance(exc, BrokerDown) and exc.job is not None:
        return ServiceUnavailable({"detail": str(exc), "job": str(exc.job.pk)})
    return ServiceUnavailable(str(exc))


def exception_handler(exc, context):
    """REST_FRAMEWORK's EXCEPTION_HANDLER: the service layer's errors as API errors."""
    if isinstance(exc, ServiceError):
        exc = as_api_error(exc)
    return drf_exception_handler(exc, context)


def not_found(request, exception):
    """handler404: under /api/, a URL that matches no route (an id of the wrong shape) is a
    JSON 404 like every other API error, not Django's HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)
