# Everything installs into .venv on first use; later runs reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . --group tests --group lint --group bench
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sharedwasm demo

test: $(STAMP)
	scripts/ensure-tools
	scripts/test

# All benchmarks (about 5 minutes): JSON lines and a chart in benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

check: $(STAMP)
	scripts/check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
