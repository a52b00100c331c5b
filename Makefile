# Quick start: `make run` (install, migrate, bootstrap the base model, serve on :8000)
# and `make test` (install with dev extras, run the test suite).
VENV ?= .venv
PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# MNIST: an explicit UNLEARN_DATA_DIR wins; else a shared copy beside the checkout (our
# machines have no internet); else ./data, where torchvision downloads it.
export UNLEARN_DATA_DIR ?= $(if $(wildcard ../shared/data/MNIST/raw),$(abspath ../shared/data),./data)
# `make run`/`make serve` serve plain HTTP on $(HOST): the console's cookies are Secure
# by default, which browsers only keep over HTTPS (docs/console.md). Behind HTTPS, set
# UNLEARN_CONSOLE_SECURE_COOKIE=true (or leave it unset outside make).
export UNLEARN_CONSOLE_SECURE_COOKIE ?= false

.PHONY: run test lint install install-dev migrate bootstrap serve worker bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# constraints.txt pins every package to the versions the suite last passed with
# (regenerate: $(BIN)/pip freeze --exclude-editable > constraints.txt).
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/unlearn db upgrade

bootstrap: migrate
	$(BIN)/unlearn bootstrap --url http://$(HOST):$(PORT)

serve: install
	$(BIN)/unlearn serve --host $(HOST) --port $(PORT)

run: bootstrap
	@echo "Serving on http://$(HOST):$(PORT)  (OpenAPI docs: http://$(HOST):$(PORT)/docs; review console: http://$(HOST):$(PORT)/console/)"
	@echo "Calls need an API key: curl -H 'Authorization: Bearer <key>' http://$(HOST):$(PORT)/models"
	@echo "  (the admin key printed above on first start; more: $(BIN)/unlearn keys create --name NAME --role ROLE)"
	$(BIN)/unlearn serve --host $(HOST) --port $(PORT)

worker: install
	$(BIN)/unlearn worker

# The import contracts (pyproject.toml's [tool.importlinter]) first: a layer broken fails fast.
test: install-dev
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff, mypy and import-linter as configured in pyproject.toml (.pre-commit-config.yaml
# runs the same).
lint: install-dev
	$(BIN)/ruff check app tests migrations benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/alpha_sweep.py
	$(BIN)/python benchmarks/forget_latency.py
	$(BIN)/python benchmarks/predict_throughput.py

clean:
	rm -rf var .pytest_cache .import_linter_cache
