# paymesh: `make run` starts the whole mesh, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DESCRIPTOR := build/paymesh.pb
OPENAPI := build/openapi.json
EDGE := build/edge.lua
PROTOS := $(shell find proto -name '*.proto')
# Prometheus and promtool: the ones on PATH, else Debian's `prometheus` package unpacked under
# build/ (not installed: its init script would start a server on :9090).
PROMETHEUS_DIR := build/prometheus
PROMETHEUS := $(or $(shell command -v prometheus 2>/dev/null),$(PROMETHEUS_DIR)/usr/bin/prometheus)
PROMTOOL := $(or $(shell command -v promtool 2>/dev/null),$(PROMETHEUS_DIR)/usr/bin/promtool)
# pgbouncer (tests/integration/test_pgbouncer.py): Debian's, else its package (and libc-ares2)
# unpacked under build/ by tools/fetch_pgbouncer.sh (not installed: its init script would start one).
PGBOUNCER_DIR := build/pgbouncer
PGBOUNCER := $(or $(wildcard /usr/sbin/pgbouncer),$(shell command -v pgbouncer 2>/dev/null),$(PGBOUNCER_DIR)/usr/sbin/pgbouncer)
# The browser of the back office's tests (tests/support/browser.py): Debian's chromium, installed
# by tools/install_chromium.sh when missing (Playwright's own browser download cannot work here).
CHROMIUM := $(or $(shell command -v chromium 2>/dev/null),/usr/bin/chromium)

.PHONY: install run test test-fast unit lint lint-style lint-types lint-protos lint-imports \
	breaking alerts proto bench k8s chromium clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(INSTALLED)

# Stubs are committed (tests fail when they are stale); the descriptor set is built.
proto: $(INSTALLED)
	$(PY) tools/gen_protos.py --python-out src --descriptor-out $(DESCRIPTOR)
	$(PY) tools/gen_openapi.py $(DESCRIPTOR) $(OPENAPI)

# The descriptor set and, from it, the merchants' OpenAPI document (GET /openapi.json).
$(DESCRIPTOR) $(OPENAPI) &: $(INSTALLED) $(PROTOS) tools/gen_openapi.py
	$(PY) tools/gen_protos.py --descriptor-out $(DESCRIPTOR)
	$(PY) tools/gen_openapi.py $(DESCRIPTOR) $(OPENAPI)

# Envoy's edge filter: the routes and request schemas from the descriptor set + envoy/edge.lua.
$(EDGE): $(DESCRIPTOR) envoy/edge.lua tools/gen_edge_lua.py
	$(PY) tools/gen_edge_lua.py $(DESCRIPTOR) envoy/edge.lua $(EDGE)

run: $(INSTALLED) $(DESCRIPTOR) $(OPENAPI) $(EDGE)
	$(PY) -m dev.devmesh

# Two workers: most of the suite waits on processes (timeouts, retry schedules, meshes
# starting), so two cores run it in about half the time. Groups and their order:
# tests/integration/conftest.py. XDIST= runs it in one process.
XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder
test: $(INSTALLED) $(DESCRIPTOR) $(OPENAPI) $(EDGE) lint breaking alerts $(PROMETHEUS) $(PGBOUNCER) \
		$(CHROMIUM)
	PROMETHEUS_BIN=$(abspath $(PROMETHEUS)) PGBOUNCER_BIN=$(abspath $(PGBOUNCER)) \
		CHROMIUM_BIN=$(CHROMIUM) \
		$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

$(PROMETHEUS_DIR)/usr/bin/prometheus $(PROMETHEUS_DIR)/usr/bin/promtool &:
	tools/fetch_prometheus.sh $(PROMETHEUS_DIR)

$(PGBOUNCER_DIR)/usr/sbin/pgbouncer:
	tools/fetch_pgbouncer.sh $(PGBOUNCER_DIR)

chromium: $(CHROMIUM)

$(CHROMIUM):
	tools/install_chromium.sh

# The alert rules are valid and each fires (and stays quiet) as prometheus/alerts_test.yml says.
alerts: $(PROMTOOL)
	$(PROMTOOL) check rules prometheus/alerts.yml
	$(PROMTOOL) test rules prometheus/alerts_test.yml

# The protos must not break the contracts of main's previous commit (AGAINST=v1.2.0: a tag).
breaking: $(INSTALLED)
	BUF=$(VENV)/bin/buf tools/buf_breaking.sh $(AGAINST)

unit: $(INSTALLED) $(DESCRIPTOR) $(OPENAPI) $(EDGE)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The tests that need no PostgreSQL, RabbitMQ or mesh, in under a minute: the unit tests and
# the contract suites run on the in-memory twins (tests/unit), less those that run Envoy, buf
# or schemathesis over the whole contract (marked `tools`; make unit and make test run them).
test-fast: $(INSTALLED) $(DESCRIPTOR) $(OPENAPI) $(EDGE)
	$(PY) -m pytest tests/unit -q -m 'not integration and not fuzz and not tools' $(PYTEST_ARGS)

# Every check a change must pass besides the tests; `make test` runs them first, so CI does.
# Each is a target of its own (`make lint-types` alone); a new linter joins LINTERS.
LINTERS := lint-style lint-types lint-protos lint-imports
lint: $(LINTERS)

lint-style: $(INSTALLED)
	$(VENV)/bin/ruff check src tests tools bench dev
	$(VENV)/bin/ruff format --check src tests tools bench dev

# mypy --strict on the packages [tool.mypy] lists in pyproject.toml (the kit and the domains).
lint-types: $(INSTALLED)
	$(VENV)/bin/mypy

lint-protos: $(INSTALLED)
	$(VENV)/bin/buf lint

# Who may import whom: the floors and the plain domains ([tool.importlinter] in pyproject.toml).
lint-imports: $(INSTALLED)
	$(VENV)/bin/lint-imports

# The Kubernetes manifests: deploy/kubernetes/overlays/<overlay> rendered into
# build/k8s/<overlay>.yaml, and the migration Job to run first into <overlay>-migrate.yaml
# (README.md, "Deploy to Kubernetes"; no kustomize binary needed).
k8s: $(INSTALLED)
	$(PY) tools/render_k8s.py --out build/k8s

# Each benchmark appends its rows to build/bench.jsonl (BENCH_JSON_OUT; vault.py through
# summary.py --run, which records the rows it prints); the summary prints issue 9's rows from
# it as one table at the end.
bench: $(INSTALLED) $(DESCRIPTOR) $(OPENAPI) $(EDGE)
	rm -f build/bench.jsonl
	BENCH_JSON_OUT=build/bench.jsonl $(PY) bench/read_path.py --concurrency 1,16,32
	BENCH_JSON_OUT=build/bench.jsonl $(PY) bench/summary.py --run bench/vault.py --concurrency 1,16,32
	BENCH_JSON_OUT=build/bench.jsonl $(PY) bench/payments.py --seconds 8 --concurrency 1,32
	$(PY) bench/outbox_relay.py
	$(PY) bench/psp_webhooks.py --seconds 8 --concurrency 1,16
	$(PY) bench/summary.py build/bench.jsonl

clean:
	rm -rf build $(VENV)
