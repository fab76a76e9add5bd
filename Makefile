# Two commands: `make run` starts the product, `make test` passes the tests. Both set up
# everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= var

.PHONY: run test setup system-deps lint format weights bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

system-deps:
	./scripts/system-deps.sh

run: setup
	$(BIN)/inspect-app serve --demo --data-dir $(DATA_DIR)

test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The default weights, reproducibly: training data seed 1, training seed 0, then the test
# figures on a fresh set (seed 777, never trained on) added to the model card.
weights: setup
	rm -rf $(DATA_DIR)/train $(DATA_DIR)/test777
	$(BIN)/inspect-app data generate --out $(DATA_DIR)/train --n 8000 --seed 1
	$(BIN)/inspect-app train --data $(DATA_DIR)/train --out models/weights/default.pt --seed 0 --data-seed 1
	$(BIN)/inspect-app data generate --out $(DATA_DIR)/test777 --n 1000 --seed 777
	$(BIN)/inspect-app evaluate --data $(DATA_DIR)/test777 --card

bench: setup
	$(BIN)/python bench/model_throughput.py
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/review_latency.py

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .ruff_cache
