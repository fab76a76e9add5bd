# Two commands: `make run` starts the product, `make test` passes the tests. Both set up
# everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= var
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_WORKERS ?= 2
LOCK := requirements.lock
UV_LOCK := requirements-uv.lock
UV := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python

.PHONY: run test setup lock system-deps lint format weights bench clean

# Installs exactly what requirements.lock names (every package, direct and transitive, at one
# version with its hashes), so two fresh clones on different days get the same packages.
# pyproject.toml keeps the ranges; `make lock` turns them into a new lock. pip installs only uv
# (itself locked with hashes in requirements-uv.lock); uv installs the lock, about five times
# faster than pip on this machine (92 s against 493 s, fresh venv, no cache, one run), and
# checks the same hashes. --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set
# (it is here), a venv without .pyc files compiles every module again in every process, and
# importing the service took 33-37 s instead of 16-18.
$(STAMP): $(LOCK) $(UV_LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(UV_LOCK)
	$(UV) --require-hashes --no-deps -r $(LOCK)
	$(UV) --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

setup: $(STAMP)

# Regenerate the lock from pyproject.toml's ranges (needs the package index; minutes, as the
# torch wheels are hashed). Review the diff, then commit pyproject.toml and the lock together.
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet pip-tools
	.venv-lock/bin/pip-compile --quiet --generate-hashes --extra dev --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	.venv-lock/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -o $(UV_LOCK) requirements-uv.in

system-deps:
	./scripts/system-deps.sh

run: setup
	$(BIN)/inspect-app serve --demo --data-dir $(DATA_DIR) --host $(HOST) --port $(PORT)

# Two workers (pytest-xdist), a module whole to each: most of the suite waits on service
# processes, browsers and databases it starts, so two keep both cores busy. Modules go out in
# the order tests/conftest.py gives (the long ones first), not xdist's most-tests-first.
# TEST_WORKERS=0 runs it in this one process. Three workers were slower (15:48 against 15:05
# for the suite on a quiet fresh clone): the suite is CPU-bound.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: every worker, service and CLI
# process the suite starts would otherwise compile the project's modules, and pytest rewrite
# every test module and plugin, again (collecting took 36.6 s a process without the cache,
# 27.3 s with it).
test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The default weights, reproducibly: training data seed 1, training seed 0, then the test
# figures on a fresh set (seed 777, never trained on) added to the model card, and the ONNX
# graph serving runs (default.onnx, kept only if it passes its parity check; default.onnx.json).
weights: setup
	rm -rf $(DATA_DIR)/train $(DATA_DIR)/test777
	$(BIN)/inspect-app data generate --out $(DATA_DIR)/train --n 8000 --seed 1
	$(BIN)/inspect-app train --data $(DATA_DIR)/train --out models/weights/default.pt --seed 0 --data-seed 1
	$(BIN)/inspect-app data generate --out $(DATA_DIR)/test777 --n 1000 --seed 777
	$(BIN)/inspect-app evaluate --data $(DATA_DIR)/test777 --card
	$(BIN)/inspect-app models export-onnx

bench: setup
	$(BIN)/python bench/model_throughput.py
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/review_latency.py

clean:
	rm -rf $(VENV) .venv-lock $(DATA_DIR) .pytest_cache .ruff_cache
