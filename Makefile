# Two commands matter: `make run` starts LocalFlow, `make test` runs every test.
# `make test-fast` skips the slow tiers (real processes, Chromium, containers, the soak);
# `make soak` is the chaos soak (SOAK_SECONDS=60 make soak for a short one).
# uv installs the locked dependencies on first use; if uv is missing we bootstrap it into
# .uv/ with the machine's own Python, so a fresh Debian with Python 3.11 needs nothing else.

UV := $(shell command -v uv 2>/dev/null || echo .uv/bin/uv)
# Compose v2 (`docker compose`) where present, else the older standalone `docker-compose`.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
PYTEST_ARGS ?=
# `make test-fast` runs its tests in this many processes (pytest-xdist; whole files per process,
# so a module's shared fixtures are made once). Its tests mostly wait (on a worker, a server,
# a subprocess), so two share this 2-core machine well. TEST_JOBS=0: in one process.
TEST_JOBS ?= 2

.PHONY: run test test-fast lint tidy bench soak migrate compose-up

run: $(UV)
	$(UV) run localflow serve

test: $(UV)
	$(UV) run pytest $(PYTEST_ARGS)

# Both install the dependencies' bytecode with them (UV_COMPILE_BYTECODE): where
# PYTHONDONTWRITEBYTECODE is set nothing caches it later, and each test process would compile
# litestar, psycopg & co. from source again (~3 s of CPU each).
test test-fast: export UV_COMPILE_BYTECODE := 1

test-fast: $(UV)
	$(UV) run pytest -m "not e2e and not browser and not compose and not soak" -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

lint: $(UV)
	$(UV) run ruff check .

tidy: $(UV)
	$(UV) lock
	$(UV) sync

bench: $(UV)
	$(UV) run python bench/run.py

soak: $(UV)
	$(UV) run python bench/soak.py $(SOAK_ARGS)

migrate: $(UV)
	$(UV) run localflow migrate

compose-up:
	$(COMPOSE) up --build

.uv/bin/uv:
	python3 -m venv .uv
	.uv/bin/pip install --quiet uv
