# Every target uses the virtual environment in .venv; `make venv` (run by the others) builds it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv up down status demo test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

up: venv
	$(PY) -m deploy.local up

down:
	@test -x $(PY) && $(PY) -m deploy.local down || echo "nothing to stop (no .venv)"

status: venv
	$(PY) -m deploy.local status

demo: venv
	$(PY) -m deploy.local demo

# The suite runs once per database: SQLite (the default) and PostgreSQL (production's), the
# latter on a throwaway cluster of its own (tests/support/postgres.py). What the suite needs
# from the system is checked, or installed as root, before pytest starts (deploy/testdeps.sh).
# `make test TEST_DATABASES=sqlite` for one pass; PYTEST_ARGS go to both.
TEST_DATABASES ?= sqlite postgresql
PYTEST_ARGS ?=

test: venv
	sh deploy/testdeps.sh $(TEST_DATABASES)
	$(if $(filter sqlite,$(TEST_DATABASES)),env -u DATABASE_URL $(PY) -m pytest $(PYTEST_ARGS))
	$(if $(filter postgresql,$(TEST_DATABASES)),$(PY) -m tests.support.postgres $(PY) -m pytest $(PYTEST_ARGS))

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: venv
	$(PY) -m bench
	$(PY) -m bench.push
	$(PY) -m bench.signing

clean: down
	rm -rf .run
