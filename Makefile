# Every target uses the virtual environment in .venv; `make venv` (run by the others) builds it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv up down status restart demo test lint bench faults clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

up: venv
	$(PY) -m deploy.local up

down:
	@test -x $(PY) && $(PY) -m deploy.local down || echo "nothing to stop (no .venv)"

# No .venv: nothing can have been started from this checkout (and building one to say so is
# minutes of pip).
status:
	@if test -x $(PY); then $(PY) -m deploy.local status; \
	else echo "nothing is running (no .venv here: \`make up\` builds it and starts the fleet)"; fi

# One process of the running fleet, the others left alone: WHAT=central|beat|web|redis|"agent IP".
restart: venv
	@test -n "$(WHAT)" || { echo 'usage: make restart WHAT=central|beat|web|redis|"agent 127.0.1.2"'; exit 2; }
	$(PY) -m deploy.local restart $(WHAT)

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
	-$(PY) -m tests.support.salt prepare  # Salt in a venv of its own (test_salt_mode.py says why if not)
	$(if $(filter sqlite,$(TEST_DATABASES)),env -u DATABASE_URL $(PY) -m pytest $(PYTEST_ARGS))
	$(if $(filter postgresql,$(TEST_DATABASES)),$(PY) -m tests.support.postgres $(PY) -m pytest $(PYTEST_ARGS))

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: venv
	$(PY) -m bench
	$(PY) -m bench.push
	$(PY) -m bench.signing
	$(PY) -m bench.audit
	$(PY) -m bench.loop  # the whole loop against Ansible and Salt's CLI (issue 18)
	$(PY) -m bench.ssh  # SSH mode against Ansible ad-hoc, N = 1, 10, 50, 200 (issue 15)
	$(PY) -m bench.live  # live output's per-task cost on the agent (issue 18)
	$(PY) -m bench.client  # the thin client's start-up against python -c pass (issue 18)

# The fault-injection suite (issue 14): its own fleet, every scenario; FAULTS_ARGS=--short etc.
faults: venv
	$(PY) -m bench.faults $(FAULTS_ARGS)

clean: down
	rm -rf .run
