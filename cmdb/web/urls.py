"""Web routes: the console's pages beside the admin."""

from django.urls import path

from cmdb.web import fleet, hostpage, jobpage, views

app_name = "web"
urlpatterns = [
    path("jobs/<uuid:job_id>/", jobpage.job_detail, name="job"),
    path("jobs/<uuid:job_id>/export.<str:fmt>", jobpage.job_export, name="job-export"),
    path("jobs/<uuid:job_id>/cancel/", jobpage.job_cancel, name="job-cancel"),
    path("jobs/<uuid:job_id>/rerun/", jobpage.job_rerun, name="job-rerun"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("fleet/", fleet.fleet, name="fleet"),
    path("hosts/<int:host_id>/", hostpage.host_detail, name="host"),
    path("run/", fleet.run, name="run"),
    path("run/count/", fleet.run_count, name="run-count"),
]
