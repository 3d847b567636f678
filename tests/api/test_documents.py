"""One renderer of a job and a host task (cmdb.jobs.documents): `check_task --json` prints the
document the API answers, and the API's schema declares exactly its fields."""

import io
import json

import pytest
from django.core.management import call_command

from cmdb.api.serializers import HostTaskSerializer, JobSerializer
from cmdb.jobs import documents
from cmdb.jobs.choices import HostTaskStateChoices as State
from cmdb.jobs.models import HostTask
from tests.support.api import make_job, without_host
from tests.support.factories import make_host

pytestmark = pytest.mark.django_db
IPS = ["127.0.1.71", "127.0.1.72"]


def check_task_json(ident: str) -> dict:
    out = io.StringIO()
    call_command("check_task", ident, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_check_task_json_is_the_apis_document_for_a_job_and_for_a_host_task(viewer, cli_user):
    for ip in IPS:
        make_host(ip)
    job = make_job(*IPS)
    task = HostTask.objects.filter(job=job).first()
    task.fetched = {"path": "/srv/fetched/x", "sha256": "a" * 64, "size": 3}
    task.save()

    api_job = viewer.get(f"/api/jobs/{job.pk}/").json()
    api_task = viewer.get(f"/api/host-tasks/{task.task_id}/").json()

    assert check_task_json(str(job.pk)) == without_host(api_job)
    assert check_task_json(task.task_id) == without_host(api_task)
    # The server's own paths are not part of it: the file is a link to download.
    assert "/srv/fetched" not in json.dumps(api_job)
    assert api_task["file"]["download"].endswith(f"/api/host-tasks/{task.task_id}/file/")


def test_the_schema_declares_exactly_the_documents_fields():
    make_host(IPS[0])
    job = make_job(IPS[0])
    tasks = list(HostTask.objects.with_celery_state().filter(job=job))

    job_doc = documents.job_document(job, tasks, lambda name, **kw: "/x/")

    assert list(JobSerializer().fields) == list(job_doc)
    assert list(HostTaskSerializer().fields) == list(job_doc["tasks"][0])


def test_the_command_lines_links_are_the_apis_routes():
    from django.urls import reverse

    from cmdb.jobs.management.commands.check_task import PATHS, path_to

    args = {"pk": "00000000-0000-0000-0000-000000000001", "task_id": "t-1"}
    for name, template in PATHS.items():
        kwargs = {k: v for k, v in args.items() if "{" + k + "}" in template}
        assert path_to(name, **kwargs) == reverse(name, kwargs=kwargs)


@pytest.mark.parametrize(
    "document",
    [
        {"a": 1, "b": [1, 2.5, -0.0, 1e100, None, True, False], "c": {}, "d": [], "e": "x"},
        {"tasks": [{"stdout": {"head": 'caf\u00e9 \u2603 \x1b[31m\n\t"\\\\', "bytes": 10**20}}]},
        {"nested": [[[]], [{}], {"k": [{"deep": [1, {"x": None}]}]}], "nan": float("nan")},
        {"inf": [float("inf"), float("-inf")], 1: "int key", None: ("a", "tuple")},
        {"state": State.OK, "n": [State.FAILED]},
        [],
        "just a string",
        3,
    ],
)
def test_dumps_writes_what_json_dumps_with_an_indent_of_2_writes(document):
    assert documents.dumps(document) == json.dumps(document, indent=2)


def test_dumps_writes_a_jobs_document_as_json_dumps_does():
    make_host(IPS[0])
    job = make_job(IPS[0], requested_by="al\u00efce")
    doc = documents.job_document(job, list(HostTask.objects.with_celery_state().filter(job=job)),
                                 lambda name, **kw: "/x/")  # fmt: skip

    assert documents.dumps(doc) == json.dumps(doc, indent=2)
