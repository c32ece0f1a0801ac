# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-odoo lint format bench clean deb

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/floorgate demo

# .ci/system-deps installs the system tools the tests use when they are missing (as root);
# .ci/odoo-servers prepares the real Odoo 18 and 19 servers from ../shared/odoo (cached).
test: $(STAMP)
	.ci/system-deps
	.ci/odoo-servers prepare
	$(BIN)/pytest

# Only the Odoo destination, against the real servers (and the stand-in for faults).
test-odoo: $(STAMP)
	.ci/odoo-servers prepare
	$(BIN)/pytest tests/odoo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every bench/*_bench.py, one table, bench/results/latest.json. QUICK=1: a short run.
bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick)

# Debian package with its own venv in /opt/floorgate, built on /usr/bin/python3.11
# (apt-get install python3.11-venv); see packaging/build_deb.py. Output: $(DEB_DIR)/.
DEB_DIR ?= dist
deb:
	$(PYTHON) packaging/build_deb.py --out-dir $(DEB_DIR)

clean:
	rm -rf $(VENV) .floorgate-demo build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
