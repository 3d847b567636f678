"""The shape of the tree, read from its imports (ast): layers import only downwards, nothing
loops, no import hides inside a function, and every environment variable is read in one
settings module per side."""

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Each package may import only those before it (and itself).
LAYERS = ["collectors", "wire", "workers", "cmdb", "gateway", "deploy", "bench"]
#: The server speaks to agents only through the wire contract: none of the agent's code.
FORBIDDEN = {"cmdb": {"workers"}}
#: Function-level imports of the project's code that must stay where they are, and why.
LATE_IMPORTS = {
    # Django: models can be imported only once every app is loaded.
    ("cmdb/assets/apps.py", "cmdb.assets.signals"),
    ("cmdb/audit/apps.py", "cmdb.audit.signals"),
    # `from cmdb.audit import record` while the package is imported before models can be.
    ("cmdb/audit/__init__.py", "cmdb.audit.trail"),
    # The redis client only for type hints (wire/ needs no redis to be imported).
    ("wire/blobs.py", "redis"),
    # The gateway reads the inventory: its models only once Django is set up.
    ("gateway/__main__.py", "gateway.worker"),
}
#: Where the environment may be read.
SETTINGS = {"cmdb/settings.py", "workers/config.py"}
#: Reads of the environment that are not settings, and why.
ENV_READS = {
    # Commands run by collectors get the agent's PATH plus the system folders.
    "collectors/source.py",
    # Django's and Celery's own entry points name the settings module (setdefault).
    "cmdb/celery.py",
    "cmdb/wsgi.py",
    "gateway/__main__.py",
}


def sources(*packages: str) -> list[Path]:
    return sorted(
        p for pkg in packages for p in (ROOT / pkg).rglob("*.py") if "migrations" not in p.parts
    )


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(p): p for p in sources(*LAYERS)}


def _type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path):
    """(imported module, line, inside a function) for each import in ``path``; a name imported
    from a package counts as its module when it is one (``from cmdb.jobs import lifecycle``)."""
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    name = f"{child.module}.{alias.name}"
                    found.append((name if name in MODULES else child.module, child.lineno,
                                  in_function))  # fmt: skip
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


def test_no_package_imports_one_above_it():
    wrong = []
    for module, path in MODULES.items():
        here = module.split(".")[0]
        for name, line, _ in imports(path):
            top = name.split(".")[0]
            if top in LAYERS and (LAYERS.index(top) > LAYERS.index(here)
                                  or top in FORBIDDEN.get(here, ())):  # fmt: skip
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_project_modules_import_no_loop():
    graph = defaultdict(set)
    for module, path in MODULES.items():
        for name, _, _ in imports(path):
            if name in MODULES and name != module:
                graph[module].add(name)
    loops, state = [], {}

    def walk(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                loops.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = "done"

    for module in sorted(MODULES):
        if module not in state:
            walk(module, [module])
    assert not loops, "\n".join(loops)


def test_no_import_hides_inside_a_function():
    late = {(str(p.relative_to(ROOT)), name, line)
            for p in sources("collectors", "wire", "workers", "cmdb")
            for name, line, in_function in imports(p) if in_function}  # fmt: skip
    unexplained = sorted(item for item in late if item[:2] not in LATE_IMPORTS)
    assert not unexplained, "\n".join(f"{p}:{line} imports {n}" for p, n, line in unexplained)


def _reads_environment(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        text = ast.unparse(node) if isinstance(node, ast.Attribute | ast.Name) else ""
        if text in ("os.environ", "os.getenv", "environ") and isinstance(node.ctx, ast.Load):
            lines.append(node.lineno)
    return lines


def test_the_environment_is_read_only_by_the_settings_modules():
    readers = {str(p.relative_to(ROOT)): _reads_environment(p)
               for p in sources("collectors", "wire", "workers", "cmdb")}  # fmt: skip
    wrong = {p: lines for p, lines in readers.items() if lines and p not in SETTINGS | ENV_READS}
    assert not wrong
    assert all(readers[p] for p in SETTINGS)  # the test sees reads where they are


FRONT_ENDS = ["cmdb/api", "cmdb/web", "cmdb/jobs/management", "cmdb/hosts/tasks.py",
              "cmdb/assets/tasks.py"]  # fmt: skip
#: What only the service layer (cmdb.jobs.services) calls.
BELOW_SERVICES = {"cmdb.jobs.dispatch", "cmdb.jobs.lifecycle", "cmdb.files.uploads",
                  "cmdb.jobs.broker"}  # fmt: skip


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_front_ends_act_only_through_the_service_layer(front_end):
    paths = [ROOT / front_end] if front_end.endswith(".py") else sources(front_end)
    wrong = [f"{p.relative_to(ROOT)}:{line} imports {name}"
             for p in paths for name, line, _ in imports(p) if name in BELOW_SERVICES]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_importing_the_server_never_builds_the_agents_app():
    """The wire contract is shared; the agent's Celery app must not become current there."""
    code = (
        "import sys, django, celery\n"
        "django.setup()\n"
        "import cmdb.api.urls, cmdb.jobs.monitor, cmdb.jobs.intake, cmdb.web.actions\n"
        "assert 'workers.celery' not in sys.modules, 'the agent app was built'\n"
        "assert celery.current_app.main == 'cmdb', celery.current_app.main\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cmdb.settings", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
