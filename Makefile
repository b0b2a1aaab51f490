# Start-up tooling. GNU make; every recipe runs with /bin/sh.
#
#   make run     install, start embedded PostgreSQL/Redis if DATABASE_URL/REDIS_URL are unset,
#                migrate, create the demo tenant and users, serve on $(PORT)
#   make test    install, lint, the JS client's unit tests (node --test; skipped, said so, without
#                node), its type declarations (make js-types), pytest (against
#                DATABASE_URL/REDIS_URL, or embedded servers; the browser tests need
#                /usr/bin/chromium and skip with the reason without it)
#   make lint    ruff check + ruff format --check + mypy (also the first steps of make test)
#   make js-types
#                tsc --noEmit: clients/js/index.d.ts compiled against clients/js/typecheck/usage.ts
#                (TypeScript from clients/js/package-lock.json; skipped, said so, without npm)
#
# Variables: PORT (8000), DATA_DIR (./.data), PYTEST_ARGS, TEST_WORKERS (2), BENCH_ARGS, PYTHON
# (python3), UV.

SHELL := /bin/sh
.DEFAULT_GOAL := help

PYTHON ?= python3
PORT ?= 8000
DATA_DIR ?= ./.data
PYTEST_ARGS ?=
# pytest-xdist workers (each has its own test database and Redis prefix); 0 runs serially.
TEST_WORKERS ?= 2
BENCH_ARGS ?=
export PORT DATA_DIR

# uv must use the machine's python3 (>= 3.11), never download a Python build of its own, and
# always sync into ./.venv, which every recipe below calls directly.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

# uv from PATH, else a private copy in .tools/ (bootstrapped by the rule for .tools/bin/uv).
UV_ON_PATH := $(shell command -v uv 2>/dev/null)
UV ?= $(if $(UV_ON_PATH),$(UV_ON_PATH),.tools/bin/uv)
UV_BOOTSTRAP := $(if $(filter .tools/bin/uv,$(UV)),.tools/bin/uv)

VENV_BIN := .venv/bin
# Recipes `exec` it, so that make's child is devservices itself (no shell in between).
DEVSERVICES := $(VENV_BIN)/python scripts/devservices.py

.PHONY: help install run test lint js-types bench services clean-data

# The usage file is an app's use of the declarations: one that drifted from client.js, or decayed
# to `any`, fails tsc. npm ci runs only when node_modules is older than the lock (npm ci writes
# node_modules/.package-lock.json last), so later runs need no registry.
define JS_TYPES
if command -v npm >/dev/null 2>&1; then \
	if [ ! clients/js/node_modules/.package-lock.json -nt clients/js/package-lock.json ]; then \
		(cd clients/js && npm ci --ignore-scripts --no-audit --no-fund) || exit 1; \
	fi; \
	echo "tsc --noEmit -p clients/js ($$(clients/js/node_modules/.bin/tsc --version))"; \
	clients/js/node_modules/.bin/tsc --noEmit -p clients/js; \
else \
	echo "*** SKIPPED the browser client's type check (clients/js/index.d.ts): npm is not" \
		"installed (Debian: apt-get install -y npm) ***"; \
fi
endef

help:
	@echo "make run         serve the app on PORT=$(PORT) (embedded PostgreSQL/Redis if the URLs are unset)"
	@echo "make test        lint + node --test and tsc (JS client) + pytest; extra pytest args: PYTEST_ARGS='-k name -x'"
	@echo "make lint        ruff check + ruff format --check (+ mypy when configured)"
	@echo "make js-types    tsc --noEmit: clients/js/index.d.ts against an app's use of it"
	@echo "make bench       bench/run.py against embedded or given servers; args: BENCH_ARGS"
	@echo "make services    start the embedded servers only and print their URLs"
	@echo "make install     uv sync --frozen into .venv"
	@echo "make clean-data  delete .data (the embedded servers' data)"

# A venv keeps uv out of the system and user site-packages; `pip install --user` is the fallback
# for a python3 without the venv module (Debian's python3-venv not installed).
.tools/bin/uv:
	@echo "uv is not on PATH: installing it into .tools/ with $(PYTHON)"
	@rm -rf .tools
	@if $(PYTHON) -m venv .tools >/dev/null 2>&1; then \
		.tools/bin/python -m pip install --disable-pip-version-check --quiet uv; \
	else \
		rm -rf .tools; \
		echo "($(PYTHON) -m venv failed; trying $(PYTHON) -m pip install --user uv)"; \
		$(PYTHON) -m pip install --disable-pip-version-check --quiet --user uv 2>/dev/null \
		|| $(PYTHON) -m pip install --disable-pip-version-check --quiet --user \
			--break-system-packages uv \
		|| { echo "cannot install uv: install python3-venv or pip, or uv itself" >&2; exit 1; }; \
		mkdir -p .tools/bin; \
		ln -sf "$$($(PYTHON) -m site --user-base)/bin/uv" .tools/bin/uv; \
	fi
	@.tools/bin/uv --version

install: $(UV_BOOTSTRAP)
	$(UV) sync --frozen

# Development: DEBUG defaults to 1 here (settings refuse the default SECRET_KEY otherwise).
# The webhook worker (Procrastinate) runs beside the server; the shell forwards Ctrl-C /
# SIGTERM to both (background jobs of a non-interactive shell ignore SIGINT) and waits for
# both. Webhooks may point at local receivers here (WEBHOOK_ALLOW_PRIVATE=1).
run: install
	DEBUG="$${DEBUG:-1}" WEBHOOK_ALLOW_PRIVATE="$${WEBHOOK_ALLOW_PRIVATE:-1}" \
	exec $(DEVSERVICES) run -- sh -c '\
		$(VENV_BIN)/python manage.py migrate_schemas --noinput \
		&& $(VENV_BIN)/python manage.py ensure_demo \
		&& { $(VENV_BIN)/python manage.py webhook_worker --concurrency 20 & W=$$!; \
		$(VENV_BIN)/uvicorn config.asgi:application --host 0.0.0.0 --port "$$PORT" & U=$$!; \
		trap "kill -TERM $$U $$W 2>/dev/null" INT TERM; \
		wait $$U; code=$$?; kill -TERM $$W 2>/dev/null; wait $$W; exit $$code; }'

# Lint first and outside devservices: a lint or type error fails fast, before any server starts.
test: install
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	DEBUG=1 $(VENV_BIN)/mypy
	@if command -v node >/dev/null 2>&1; then \
		echo "node --test clients/js/test/ ($$(node --version))"; \
		node --test clients/js/test/; \
	else \
		echo "*** SKIPPED the browser client's unit tests (clients/js/test/): node is not installed" \
			"(Debian: apt-get install -y nodejs; Node >= 18) ***"; \
	fi
	@$(JS_TYPES)
	$(DEVSERVICES) run -- $(VENV_BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(VENV_BIN)/ruff check .
	$(VENV_BIN)/ruff format --check .
	DEBUG=1 $(VENV_BIN)/mypy

js-types:
	@$(JS_TYPES)

bench: install
	exec $(DEVSERVICES) run -- $(VENV_BIN)/python bench/run.py $(BENCH_ARGS)

services: install
	exec $(DEVSERVICES) env

# Stops nothing: stop `make run` / `make services` first.
clean-data:
	rm -rf .data
