# One way to do each thing: CI (.ci/run, .github/workflows/ci.yml) calls these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The extension is built in release mode everywhere: the tests include
# million-entry and 100-thread runs that a debug build makes needlessly slow.
MATURIN_FLAGS ?= --release
WHEELS ?= target/wheels

# The Debian packages the tests and the demo need: PostgreSQL's server (the tests and the demo
# start a private one from its binaries), redis-server (the shared tier and its cluster tests) and
# chromium (the dashboard's tests drive it through Playwright; no browser is downloaded).
# `make system-deps` installs those that are missing; `make test SYSTEM_PACKAGES=` skips it.
SYSTEM_PACKAGES ?= postgresql redis-server chromium
# How to tell that a package is there (its programs, wherever they came from); a package
# without a line here is asked of dpkg.
present-postgresql = ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null
present-redis-server = command -v redis-server >/dev/null && command -v redis-cli >/dev/null
present-chromium = test -x /usr/bin/chromium
present-valgrind = command -v valgrind >/dev/null
present-wrk = command -v wrk >/dev/null
# What the packages are for, in system-deps' messages.
SYSTEM_PACKAGES_FOR ?= the tests and the demo
present = $(or $(present-$(1)),dpkg-query -W -f='$${Status}' $(1) 2>/dev/null | grep -q 'ok installed')

.DEFAULT_GOAL := help
.PHONY: help system-deps dev build wheel test test-rust test-python lint fmt bench compare instructions demo clean
# Prerequisites run in the order written: system-deps stops `make test` before anything is built.
.NOTPARALLEL:

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The venv holds maturin (the build backend), the `all` extra and the `dev` dependency group,
# all read from pyproject.toml: one list.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print(*p["build-system"]["requires"], *p["project"]["optional-dependencies"]["all"], sep="\n")' >$(VENV)/requirements.txt
	$(BIN)/python -m pip install --quiet --group dev -r $(VENV)/requirements.txt
	touch $@

system-deps: ## install the Debian packages the tests and the demo need, only those missing (test and demo run it)
	@missing=""; \
	$(foreach package,$(SYSTEM_PACKAGES),{ $(call present,$(package)); } || missing="$$missing $(package)";) \
	missing="$${missing# }"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "missing system packages: $$missing (needed by $(SYSTEM_PACKAGES_FOR)); install them with:" >&2; \
		echo "  sudo apt-get install $$missing" >&2; \
		exit 1; \
	fi; \
	echo "installing Debian packages: $$missing (needed by $(SYSTEM_PACKAGES_FOR))"; \
	log="$$(mktemp)"; \
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } >"$$log" 2>&1; then \
		cat "$$log" >&2; rm -f "$$log"; exit 1; \
	fi; \
	rm -f "$$log"

dev: $(VENV)/.installed build ## create .venv (maturin, every extra, the dev tools) and build the extension into it

build: $(VENV)/.installed ## (re)build the Rust extension into .venv
	PIP_QUIET=1 $(BIN)/maturin develop --quiet $(MATURIN_FLAGS)

wheel: $(VENV)/.installed ## build the release wheel into target/wheels (WHEELS=dir for another folder)
	$(BIN)/maturin build --quiet --release --out $(WHEELS)

test: system-deps dev test-rust test-python ## build, then run the whole test suite (Rust and Python)

test-rust: ## cargo test of the pure-Rust core
	cargo test --quiet --lib --no-default-features

test-python: ## pytest (assumes `make dev`)
	$(BIN)/pytest

lint: dev ## cargo fmt/clippy, ruff, mypy --strict, stubtest
	cargo fmt --check
	cargo clippy --quiet --all-targets -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches README.md
	$(BIN)/mypy --strict python/pgcache
	$(BIN)/python -m mypy.stubtest pgcache._core

fmt: ## format Rust and Python
	cargo fmt
	$(BIN)/ruff format python tests benches README.md
	$(BIN)/ruff check --fix python tests benches

# The service-stack benchmark drives the server with wrk, installed here when missing.
bench: SYSTEM_PACKAGES := wrk
bench: SYSTEM_PACKAGES_FOR := the service benchmarks
bench: system-deps dev ## pytest-benchmark suites (installs wrk when missing)
	$(BIN)/pytest benches --benchmark-only -p no:timeout --benchmark-columns=min,mean,median,ops

compare: dev ## pgcache beside cachebox, cachetools, moka-py, theine, lru-dict, lru_cache, dict
	$(BIN)/python benches/compare.py

# Instruction counts need valgrind (callgrind), installed here when missing.
instructions: SYSTEM_PACKAGES := valgrind
instructions: SYSTEM_PACKAGES_FOR := the instruction counts
instructions: system-deps dev ## instructions per call (callgrind) of the cache, decorators, features; writes BENCHMARKS.md
	$(BIN)/python benches/instructions.py --write

# The demo drives no browser.
demo: SYSTEM_PACKAGES := $(filter-out chromium,$(SYSTEM_PACKAGES))
demo: system-deps dev ## the whole system end to end: PostgreSQL, workload, ML service, pgcache service, traffic, summary
	$(BIN)/pgcache demo

clean: ## remove the venv and build output
	rm -rf $(VENV) target .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
