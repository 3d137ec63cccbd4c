# Kalcifer: everything a newcomer needs is behind `make run` and `make test`.
# Only python3 (3.11+) and make are required; the rest lives in .venv, pinned by uv.lock.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
PROTO_SRC := protos
PROTO_OUT := libs/common/src
PROTO_FILES := $(shell find $(PROTO_SRC) -name '*.proto' 2>/dev/null | sort)
PROTO_STAMP := $(PROTO_OUT)/kalcifer/.generated
PYTEST_ARGS ?=
# pytest-xdist: one worker per core, each test file on one worker (module fixtures start databases and processes).
PYTEST_PARALLEL ?= -n auto --dist loadfile

.PHONY: help bootstrap proto run test test-unit chaos lint fmt bench docs clean

help:
	@echo "make run    - bootstrap, then start api/engine/scheduler (embedded PostgreSQL+Redis unless DATABASE_URL/REDIS_URL)"
	@echo "make test   - the whole suite (TEST_DATABASE_URL/TEST_REDIS_URL if set, else embedded servers)"
	@echo "make chaos  - SIGKILL each service, flush/restart Redis, restart PostgreSQL under load; 0 lost, 0 duplicated"
	@echo "make lint   - ruff + mypy --strict + import-linter architecture contracts"
	@echo "make bench  - benchmarks, each next to a raw baseline measured in the same run (bench/results/latest.json)"
	@echo "make docs   - regenerate docs/nodes.md, the node catalogue, from the engine's node registry"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml $(wildcard */*/pyproject.toml)
	$(UV) sync --frozen --quiet
	@touch $@

$(PROTO_STAMP): $(VENV)/.synced $(PROTO_FILES)
	rm -rf $(PROTO_OUT)/kalcifer
	$(BIN)/python -m grpc_tools.protoc -I $(PROTO_SRC) \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--mypy_out=quiet:$(PROTO_OUT) --mypy_grpc_out=quiet:$(PROTO_OUT) \
		$(PROTO_FILES)
	@touch $@

bootstrap: $(PROTO_STAMP)

proto: $(PROTO_STAMP)

run: bootstrap
	$(BIN)/kalcifer dev

test: bootstrap
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || \
		echo "make test: node/npm not found: the TypeScript SDK tests (clients/typescript) are skipped; install Node.js 20+ to run them"
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-unit: bootstrap
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Private embedded PostgreSQL and Redis (never the machine's shared ones); CHAOS_SEED=N replays a run's faults.
CHAOS_ARGS ?=
chaos: bootstrap
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/common/src/kalcifer_common services/api/src services/engine/src services/scheduler/src tools/cli/src clients/python/src tests bench
	$(BIN)/lint-imports --no-cache

fmt: bootstrap
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bootstrap
	$(BIN)/python -m bench

# The node catalogue is generated from the registry, never edited; tests/unit/test_node_catalogue.py checks it.
NODES_MD ?= docs/nodes.md
docs: bootstrap
	$(BIN)/python -m kalcifer_engine.catalogue > $(NODES_MD).tmp
	mv $(NODES_MD).tmp $(NODES_MD)

clean:
	rm -rf $(VENV) $(PROTO_OUT)/kalcifer .mypy_cache .ruff_cache .pytest_cache
