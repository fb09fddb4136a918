# One way to do each thing: CI (.ci/run, .github/workflows) calls these targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The extension is built in release mode everywhere: the tests include
# million-entry and 100-thread runs that a debug build makes needlessly slow.
MATURIN_FLAGS ?= --release

.DEFAULT_GOAL := help
.PHONY: help postgres-binaries dev build test test-rust test-python lint fmt mypy stubtest bench compare demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Every dependency (runtime and extras) comes from pyproject.toml: one list.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c 'import subprocess, sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; deps = p["dependencies"] + sum(p["optional-dependencies"].values(), []); subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "maturin>=1.9,<2", *deps])'
	touch $@

# The tests and the demo start a private PostgreSQL from the installed server
# binaries (when DATABASE_URL is not set); install them from Debian if missing.
postgres-binaries:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		echo "installing PostgreSQL's server binaries (Debian package postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

dev: $(VENV)/.installed build ## create .venv with every tool and build the extension into it

build: $(VENV)/.installed ## (re)build the Rust extension into .venv
	$(BIN)/maturin develop --quiet $(MATURIN_FLAGS)

test: dev postgres-binaries test-rust test-python ## build, then run the whole test suite (Rust and Python)

test-rust: ## cargo test of the pure-Rust core
	cargo test --quiet --lib --no-default-features

test-python: ## pytest (assumes `make dev`)
	$(BIN)/pytest

lint: dev ## cargo fmt/clippy, ruff, mypy --strict, stubtest
	cargo fmt --check
	cargo clippy --quiet --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy --strict python/pgcache
	$(BIN)/python -m mypy.stubtest pgcache._core

fmt: ## format Rust and Python
	cargo fmt
	$(BIN)/ruff format python tests benches
	$(BIN)/ruff check --fix python tests benches

bench: dev ## pytest-benchmark suites
	$(BIN)/pytest benches --benchmark-only -p no:timeout --benchmark-columns=min,mean,median,ops

compare: dev ## pgcache beside cachebox, cachetools, moka-py, theine, lru-dict, lru_cache, dict
	$(BIN)/python benches/compare.py

demo: dev postgres-binaries ## the whole system end to end: PostgreSQL, workload, ML service, pgcache service, traffic, summary
	$(BIN)/pgcache demo

clean: ## remove the venv and build output
	rm -rf $(VENV) target .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
