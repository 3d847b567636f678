"""The OpenAPI 3 schema (drf-spectacular) and the Swagger UI served from local static files."""

import re

import pytest
from django.contrib.staticfiles import finders
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.settings import patched_settings
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from cmdb.api.urls import SCHEMA_SETTINGS

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("/api/hosts/", "get"),
    ("/api/hosts/{id}/", "get"),
    ("/api/host-groups/", "get"),
    ("/api/host-groups/{id}/", "get"),
    ("/api/assets/", "get"),
    ("/api/assets/{id}/", "get"),
    ("/api/changes/", "get"),
    ("/api/changes/{id}/", "get"),
    ("/api/jobs/", "get"),
    ("/api/jobs/", "post"),
    ("/api/jobs/{id}/", "get"),
    ("/api/jobs/{id}/cancel/", "post"),
    ("/api/jobs/push/", "post"),
    ("/api/jobs/fetch/", "post"),
    ("/api/jobs/{id}/files/", "get"),
    ("/api/jobs/{id}/tasks/", "get"),
    ("/api/jobs/{id}/export/", "get"),
    ("/api/jobs/{id}/rerun/", "post"),
    ("/api/jobs/{id}/events/", "get"),
    ("/api/host-tasks/{task_id}/file/", "get"),
    ("/api/host-tasks/{task_id}/output/", "get"),
    ("/api/host-tasks/", "get"),
    ("/api/host-tasks/{task_id}/", "get"),
    ("/api/host-tasks/{task_id}/cancel/", "post"),
    ("/api/hosts/{id}/accept-key/", "post"),
    ("/api/hosts/{id}/reject-key/", "post"),
    ("/api/hosts/{id}/delete-key/", "post"),
    ("/api/audit/", "get"),
    ("/api/audit/{id}/", "get"),
    ("/api/grants/", "get"),
    ("/api/grants/", "post"),
    ("/api/grants/{id}/", "get"),
    ("/api/grants/{id}/", "delete"),
    # The inventory, writable (issue 18), and the thin client's login.
    ("/api/hosts/", "post"),
    ("/api/hosts/{id}/", "patch"),
    ("/api/hosts/{id}/", "delete"),
    ("/api/host-groups/", "post"),
    ("/api/host-groups/{id}/", "patch"),
    ("/api/host-groups/{id}/", "delete"),
    ("/api/token/", "get"),
    ("/api/token/", "post"),
}


@pytest.fixture
def schema(client_with) -> dict:
    response = client_with().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200, response.content
    return response.json()


def test_the_schema_is_valid_openapi_3(schema):
    validate_schema(schema)  # raises on any violation of the OpenAPI 3 JSON schema

    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "fleet-cmdb API"


def test_the_schema_has_every_operation_and_only_those(schema):
    found = {(path, method) for path, item in schema["paths"].items() for method in item}

    assert found == OPERATIONS


def test_the_schema_generates_without_warnings():
    GENERATOR_STATS.reset()
    with patched_settings(SCHEMA_SETTINGS):
        SchemaGenerator().get_schema(request=None, public=True)

    assert not GENERATOR_STATS, "drf-spectacular warned: see the captured output"


def test_the_schema_documents_dispatch_and_its_errors(schema):
    create = schema["paths"]["/api/jobs/"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][body.rsplit("/", 1)[1]]

    assert {"kind", "command", "hosts", "groups", "where", "timeout", "reach_timeout", "batch",
            "max_failures", "canary", "confirm", "all",
            "online_only"} == set(request["properties"])  # fmt: skip
    assert set(create["responses"]) == {"202", "400", "503"}
    cancel = schema["paths"]["/api/jobs/{id}/cancel/"]["post"]
    assert set(cancel["responses"]) == {"202", "503"}
    assert "requestBody" not in cancel
    where = next(
        p for p in schema["paths"]["/api/hosts/"]["get"]["parameters"] if p["name"] == "where"
    )
    assert where["schema"] == {"type": "array", "items": {"type": "string"}}
    assert set(schema["components"]["securitySchemes"]) == {"tokenAuth", "cookieAuth"}


def test_the_schema_is_not_served_to_anonymous_callers():
    assert APIClient().get("/api/schema/").status_code == 401


def test_swagger_ui_loads_nothing_from_the_internet(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    for url in assets:
        assert url.startswith("/static/drf_spectacular_sidecar/"), url
        assert finders.find(url.removeprefix("/static/")), f"{url} is not a local static file"
    assert "/api/schema/" in html
    assert "http://" not in html and "https://" not in html


def test_the_schema_documents_a_jobs_host_tasks_as_a_paginated_list(schema):
    tasks = schema["paths"]["/api/jobs/{id}/tasks/"]["get"]
    page = tasks["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = schema["components"]["schemas"][page.rsplit("/", 1)[1]]

    assert {p["name"] for p in tasks["parameters"]} == {"id", "limit", "offset", "state", "failed"}
    assert {"count", "next", "previous", "results"} <= set(page["properties"])
    assert page["properties"]["results"]["items"]["$ref"].endswith("/HostTask")
    job = schema["components"]["schemas"]["Job"]["properties"]
    assert job["tasks_next"]["nullable"] is True
