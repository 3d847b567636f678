"""POST /api/token/: a username and password for the user's API token (made on first use), as
`cmdb login` asks for it; GET /api/token/: whose token this is.

Rate-limited by the client's address (not X-Forwarded-For, which the client writes), so that
passwords cannot be tried fast. A failed attempt is in the audit trail (Django's
user_login_failed, with the name tried, never the password)."""

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from cmdb.api.serializers import DetailSerializer

E_WRONG = "wrong username or password (or the user is inactive)"


class LoginThrottle(SimpleRateThrottle):
    """Attempts per client address. Counted in Django's default cache: per process unless a
    shared cache is configured (gunicorn's workers each count, so the limit is per worker)."""

    scope = "login"
    rate = "10/min"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope,
                                    "ident": request.META.get("REMOTE_ADDR", "")}  # fmt: skip


class CredentialsSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False,
                                     style={"input_type": "password"})  # fmt: skip


TokenSerializer = inline_serializer(
    "Token", {"token": serializers.CharField(), "username": serializers.CharField()}
)
#: {field: [reasons]}, as every validation error of the API.
FIELD_ERRORS = {"type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}}}  # fmt: skip
WhoSerializer = inline_serializer("TokenOwner", {"username": serializers.CharField()})


class TokenView(APIView):
    #: The password's check is what the rate limit is for; reading one's own name is not.
    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [IsAuthenticated()]

    def get_throttles(self):
        return [LoginThrottle()] if self.request.method == "POST" else []

    @extend_schema(
        summary="Your API token, for a username and password (rate-limited)",
        request=CredentialsSerializer,
        auth=[],
        responses={
            200: TokenSerializer,
            400: OpenApiResponse(FIELD_ERRORS, "Wrong username or password, or a field missing: "
                                 "each field (non_field_errors) with its reasons."),
            429: OpenApiResponse(DetailSerializer, "Too many attempts from this address."),
        },
    )  # fmt: skip
    def post(self, request):
        given = CredentialsSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        user = authenticate(request._request, username=given.validated_data["username"],
                            password=given.validated_data["password"])  # fmt: skip
        if user is None or not user.is_active:
            return Response({"non_field_errors": [E_WRONG]}, status=status.HTTP_400_BAD_REQUEST)
        token, _ = Token.objects.get_or_create(user=user)  # a new one is audited (signals)
        return Response({"token": token.key, "username": user.get_username()})

    @extend_schema(summary="Whose token this is", responses={200: WhoSerializer})
    def get(self, request):
        return Response({"username": request.user.get_username()})
