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

.PHONY: run test install install-dev migrate bootstrap serve worker bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
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

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/alpha_sweep.py
	$(BIN)/python benchmarks/forget_latency.py
	$(BIN)/python benchmarks/predict_throughput.py

clean:
	rm -rf var .pytest_cache
