# The two commands: `make report` renders the report, `make test` runs the tests.
# Both create .venv and install the pinned dependencies on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= cpu
RUN_DIR ?= runs/$(PROFILE)
REPORT_DIR ?= reports

.PHONY: install report test test-fast lab bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name vpe --display-name "Python (vpe)"
	touch $(STAMP)

report: $(STAMP)
	$(BIN)/vpe report --profile $(PROFILE) --run-dir $(RUN_DIR) --out $(REPORT_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/bench_pushworld.py

clean:
	rm -rf $(VENV) runs .pytest_cache
