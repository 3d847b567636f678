"""API routes, under /api/ (namespace "api")."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from cmdb.access.api import GrantViewSet
from cmdb.api import views
from cmdb.api.token import TokenView
from cmdb.audit.api.views import AuditEntryViewSet

app_name = "api"

#: Schema settings of this API's own (the rest are SPECTACULAR_SETTINGS): assets and jobs both
#: have a ``kind`` with different choices, and each enum should keep a readable name.
SCHEMA_SETTINGS = {
    "ENUM_NAME_OVERRIDES": {
        "AssetKindEnum": "cmdb.assets.choices.AssetKindChoices",
        "JobKindEnum": "cmdb.jobs.choices.JobKindChoices",
        "AuditActionEnum": "cmdb.audit.choices.AuditActionChoices",
        "HostTaskStateEnum": "cmdb.jobs.choices.HostTaskStateChoices",
    },
}

router = DefaultRouter()
router.APIRootView = views.APIRootView
router.register("hosts", views.HostViewSet)
router.register("host-groups", views.HostGroupViewSet)
router.register("assets", views.AssetViewSet)
router.register("changes", views.ChangeViewSet)
router.register("jobs", views.JobViewSet)
router.register("host-tasks", views.HostTaskViewSet)
router.register("audit", AuditEntryViewSet)
router.register("grants", GrantViewSet)

urlpatterns = [
    # The schema is for any user who may call the API (anonymous: 401, as everywhere). The
    # Swagger UI page is a static shell: it shows the API to a logged-in (admin) session.
    path(
        "schema/",
        SpectacularAPIView.as_view(
            custom_settings=SCHEMA_SETTINGS, permission_classes=[IsAuthenticated]
        ),
        name="schema",
    ),
    path("token/", TokenView.as_view(), name="token"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="swagger-ui"),
    *router.urls,
]
