"""URL routes."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("cmdb.api.urls")),
    path("", include("cmdb.web.urls")),
]

handler404 = "cmdb.api.errors.not_found"
