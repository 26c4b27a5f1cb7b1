# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs pinned deps, runs the end-to-end job on the bundled sample
#   make test   creates .venv, installs pinned deps, runs the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/salesml demo --workdir out/demo

# pytest exits 5 when it collected no test; make treats any non-zero exit as failure.
# Two workers (pytest-xdist), whole files per worker so module fixtures are built once.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check salesml pipelines tests benchmarks notebooks
	$(BIN)/ruff format --check salesml pipelines tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache  # contracts: [tool.importlinter] in pyproject.toml

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
