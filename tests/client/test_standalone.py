"""The thin client stands alone: the standard library and itself, nothing else to install."""

import ast
import subprocess
import sys

from tests.support.fleet import ROOT

CLIENT = ROOT / "client"


def test_the_client_imports_only_the_standard_library_and_itself():
    foreign = []
    for path in sorted(CLIENT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])  # fmt: skip
            for name in names:
                top = name.split(".")[0]
                if top != "client" and top not in sys.stdlib_module_names:
                    foreign.append(f"{path.name}: {name}")
    assert not foreign, foreign


def test_the_console_script_runs_without_the_server_on_its_path(tmp_path):
    code = ("import sys, runpy; sys.argv = ['cmdb', '--help']\n"
            "try:\n    runpy.run_module('client', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "server = {'django', 'celery', 'cmdb', 'rest_framework'}\n"
            "assert not server & set(sys.modules)\n")  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "cmdb" in done.stdout and "rerun" in done.stdout
