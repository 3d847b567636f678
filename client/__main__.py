"""`python -m client`: the `cmdb` console script."""

from client.cli import run

run()
