# One command each, on a fresh machine with only Python 3.11+ and make:
#   make test   - the test suite (embedded PostgreSQL unless CBDC_DATABASE_URL is set)
#   make demo   - the end-to-end demo (needs the operator CLI)
#   make bench  - the ledger engine benchmark (cbdc bench ledger)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-slow test-both demo bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/cbdc demo

bench: $(STAMP)
	$(BIN)/cbdc bench ledger

clean:
	rm -rf $(VENV) .state .pytest_cache .hypothesis *.egg-info
