# recd's two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 CPU: on these machines the wheel lies in /opt/wheels; elsewhere pip takes it from
# the configured index (point PIP_EXTRA_INDEX_URL at PyTorch's CPU index to avoid a CUDA download).
TORCH ?= torch==2.13.0
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: demo test lint unit sysdeps clean

$(BIN)/recd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(WHEELS) "$(TORCH)"
	$(BIN)/pip install --quiet $(WHEELS) -e '.[dev]'
	touch $(BIN)/recd

demo: $(BIN)/recd
	$(BIN)/recd demo

lint: $(BIN)/recd
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# redis-server and Prometheus for the tests, installed with apt-get when missing
sysdeps:
	@bash .ci/system-deps

test: sysdeps lint
	$(BIN)/python -m pytest

unit: $(BIN)/recd
	$(BIN)/python -m pytest -m "not integration"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var
