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

test: venv
	$(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: venv
	$(PY) -m bench
	$(PY) -m bench.push
	$(PY) -m bench.signing

clean: down
	rm -rf .run
