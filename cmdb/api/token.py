"""POST /api/token/: a username and password for the user's API token (made on first use), as
`cmdb login` asks for it; GET /api/token/: whose token this is.

Failed attempts are limited per client address (not X-Forwarded-For, which the client writes)
and per username, counted in Redis so that all gunicorn workers share them
(cmdb.access.attempts), so that passwords cannot be tried fast. A failed attempt is in the
audit trail (Django's user_login_failed, with the name tried, never the password)."""

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from cmdb.access import attempts
from cmdb.api.serializers import DetailSerializer

E_WRONG = "wrong username or password (or the user is inactive)"
E_TOO_MANY = attempts.E_TOO_MANY
E_UNCOUNTED = attempts.E_UNCOUNTED


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False,
                                     style={"input_type": "password"})  # fmt: skip


TokenSerializer = inline_serializer(
    "Token", {"token": serializers.CharField(), "username": serializers.CharField()}
)
#: {field: [reasons]}, as every validation error of the API; a body that is not JSON at all is
#: DRF's {"detail": reason}.
FIELD_ERRORS = {"type": "object", "properties": {"detail": {"type": "string"}},
                "additionalProperties": {"type": "array", "items": {"type": "string"}}}  # fmt: skip
WhoSerializer = inline_serializer("TokenOwner", {"username": serializers.CharField()})


class TokenView(APIView):
    #: The password's check is what the rate limit is for; reading one's own name is not.
    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [IsAuthenticated()]

    @extend_schema(
        summary="Your API token, for a username and password (rate-limited)",
        request=CredentialsSerializer,
        auth=[],
        responses={
            200: TokenSerializer,
            400: OpenApiResponse(FIELD_ERRORS, "Wrong username or password, or a field missing: "
                                 "each field (non_field_errors) with its reasons."),
            429: OpenApiResponse(DetailSerializer, "Too many failed attempts from this address "
                                 "or for this username (Retry-After says when to try again)."),
            503: OpenApiResponse(DetailSerializer, "The attempts cannot be counted (Redis "
                                 "down): none is made."),
        },
    )  # fmt: skip
    def post(self, request):
        given = CredentialsSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        name = given.validated_data["username"]
        address = request.META.get("REMOTE_ADDR", "") or ""
        try:
            # Counted before the password is checked: parallel attempts count each other.
            wait = attempts.begin(address, name)
            if wait:
                return Response({"detail": E_TOO_MANY.format(wait=wait)},
                                status=status.HTTP_429_TOO_MANY_REQUESTS,
                                headers={"Retry-After": str(wait)})  # fmt: skip
            user = authenticate(request._request, username=name,
                                password=given.validated_data["password"])  # fmt: skip
            if user is None or not user.is_active:
                return Response({"non_field_errors": [E_WRONG]},
                                status=status.HTTP_400_BAD_REQUEST)  # fmt: skip
            attempts.succeeded(address, name)
        except attempts.Unavailable:
            return Response({"detail": E_UNCOUNTED}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        token, _ = Token.objects.get_or_create(user=user)  # a new one is audited (signals)
        return Response({"token": token.key, "username": user.get_username()})

    @extend_schema(summary="Whose token this is", responses={200: WhoSerializer})
    def get(self, request):
        return Response({"username": request.user.get_username()})
