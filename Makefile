# Two commands matter: `make test` and `make demo`. Both create the virtual
# environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo replay lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

# The main job on an embedded scenario: local backends that rate-limit, hang
# and stream, both clients failing over between them, the decisions recorded
# to a trace, then explained and replayed. No API key, no network.
demo: $(STAMP)
	$(BIN)/python -m lbtransports.demo --trace demo-trace.jsonl

# Replay every golden trace byte for byte, then explain each request's decisions.
replay: $(STAMP)
	$(BIN)/python -m lbcore replay spec/traces/*.jsonl
	$(BIN)/python -m lbcore show spec/traces/*.jsonl

bench: $(STAMP)
	$(BIN)/python bench/core_decisions.py
	$(BIN)/python bench/wire_decoding.py
	$(BIN)/python bench/transport_overhead.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
