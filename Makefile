# One task runner: setup, up, migrate, demo, test, lint, typecheck, run, worker, monitor, bench.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export EPICS_CA_ADDR_LIST ?= 127.0.0.1
export EPICS_CA_AUTO_ADDR_LIST ?= NO
export EPICS_PVA_ADDR_LIST ?= 127.0.0.1
export EPICS_PVA_AUTO_ADDR_LIST ?= NO

# daphne's WebSocket message limit (1 MiB) is below a 50,000-name subscribe (squirrel/limits.py).
DAPHNE_OPTIONS := --websocket-max-message-size 8388608 --websocket-max-frame-size 8388608

# manage.py check/makemigrations need a key; tests make their own (squirrel/settings.py).
check test typecheck: export SQUIRREL_SECRET_KEY ?= checks-only-not-a-secret

.PHONY: setup up migrate demo demo-small test lint typecheck check run worker beat monitor sim-ioc bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

setup: $(VENV)/.installed

up:
	bash scripts/services.sh
	bash scripts/ensure_db.sh

migrate: setup up
	$(PY) manage.py migrate --noinput

demo: setup up
	bash scripts/demo.sh

demo-small: setup up
	SQUIRREL_DEMO_PVS=2000 bash scripts/demo.sh

check: setup
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

test: setup up
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest -q

run: setup
	$(VENV)/bin/daphne -b 127.0.0.1 -p 8080 $(DAPHNE_OPTIONS) squirrel.asgi:application

worker: setup
	$(VENV)/bin/celery -A squirrel worker --loglevel=info

beat: setup
	$(VENV)/bin/celery -A squirrel beat --loglevel=info

monitor: setup
	$(PY) manage.py monitor

sim-ioc: setup
	$(PY) manage.py sim_ioc --count $${SQUIRREL_DEMO_PVS:-50000} --prefix SIM

clean:
	rm -rf $(VENV) staticfiles .demo
