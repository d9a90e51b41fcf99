# Two commands matter: `make test` and `make demo`. Both create the virtual
# environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo replay lint typecheck pytest redis-server bench bench-peers peers-lock clean lock

LOCK := requirements/dev.lock

# Installs follow the committed lock (every package, pip and the build backend
# included, checked by hash), so a new release upstream cannot change what a
# fresh clone runs. The project itself goes in editable, without build
# isolation, so that its build backend is the locked one too.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Refresh the lock: after changing a dependency in pyproject.toml, or to move
# to newer releases on purpose (then run `make test` and commit both files).
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv>=0.9,<1'
	$(BIN)/uv pip compile pyproject.toml requirements/tools.in --extra dev \
		--universal --python-version 3.11 --generate-hashes \
		--custom-compile-command 'make lock' --upgrade -o $(LOCK)
	printf '# inputs sha256: %s\n' "$$(cat pyproject.toml requirements/tools.in | sha256sum | cut -d' ' -f1)" >> $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

# The shared-state tests run a real redis-server (Debian's package). On a machine
# without it, root installs it; anyone else is told how, and the tests fail.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -q && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; \
		else \
			echo "redis-server is missing: install it (Debian/Ubuntu: apt-get install redis-server)"; \
			exit 1; \
		fi; }

pytest: $(STAMP) redis-server
	$(BIN)/pytest -q
	# Once more for the async client's own HTTP/1.1 layer (_h1.py, the gateway's):
	# every async transport test, raw-socket answers and faults included.
	$(BIN)/pytest -q --plain-http=h11 -k "async or not sync" tests/transports

test: lint typecheck pytest

# The main job on an embedded scenario: local backends that rate-limit, hang
# and stream, both clients failing over between them, the decisions recorded
# to a trace, then explained and replayed. No API key, no network.
demo: $(STAMP)
	$(BIN)/lb demo --trace demo-trace.jsonl

# Replay every golden trace byte for byte, then explain each request's decisions.
replay: $(STAMP)
	$(BIN)/python -m lbcore replay spec/traces/*.jsonl
	$(BIN)/python -m lbcore show spec/traces/*.jsonl

# Every bench, then bench/RESULTS.md from what they stored in bench/.results/
# (about 5-10 minutes on the 2-core machine). Each bench also runs alone.
BENCHES := core_decisions core_memory wire_decoding transport_overhead gateway shared_state
bench: $(STAMP)
	mkdir -p bench/.results
	started=$$(date +%s) && \
	for bench in $(BENCHES); do $(BIN)/python bench/$$bench.py || exit 1; done && \
	$(BIN)/python bench/transport_overhead.py --profile && \
	echo $$(( $$(date +%s) - started )) > bench/.results/make-bench-seconds
	$(BIN)/python bench/report.py

# LiteLLM side by side, from its own venv (.peers-venv, gitignored), installed
# from a pinned, hashed file: LiteLLM is never a dependency of the project.
PEERS := .peers-venv
PEERS_LOCK := bench/peers/requirements.txt
$(PEERS)/.installed: $(PEERS_LOCK)
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --require-hashes -r $(PEERS_LOCK)
	touch $@

bench-peers: $(STAMP) $(PEERS)/.installed
	mkdir -p bench/.results
	$(BIN)/python bench/peers_litellm.py
	$(BIN)/python bench/gateway.py --peers
	$(BIN)/python bench/report.py

# Re-pin LiteLLM for bench-peers (bench/peers/requirements.in is the input).
peers-lock:
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.9,<1'
	$(BIN)/uv pip compile bench/peers/requirements.in --python-version 3.11 \
		--generate-hashes --custom-compile-command 'make peers-lock' -o $(PEERS_LOCK)

clean:
	rm -rf $(VENV) $(PEERS) .mypy_cache .pytest_cache .ruff_cache .hypothesis
