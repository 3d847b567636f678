"""Web routes."""

from django.urls import path

from cmdb.web import views

app_name = "web"
urlpatterns = [
    path("jobs/<uuid:job_id>/", views.job_detail, name="job"),
    path("dashboard/", views.dashboard, name="dashboard"),
]
