# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast test-odoo lint format bench clean deb lock docs

# Pinned installs. packaging/lock/ holds two lock files made from pyproject.toml, every
# package pinned (==) with the sha256 of each of its files on PyPI, for CPython 3.11+ on
# any platform (markers say where a pin applies):
#   runtime.txt  [project] dependencies: the .deb's venv (packaging/build_deb.py)
#   test.txt     the same pins plus every optional extra ([test], ...): this venv, CI
# Installing needs only pip (--require-hashes refuses any file whose hash differs, and any
# package the lock does not pin); the venv is made anew from the lock when either changes.
#
# `make lock` regenerates both from pyproject.toml: run it after changing dependencies or
# extras there and commit the lock files with it. It keeps every pin that still fits;
# `make lock UPGRADE=1` takes the newest versions allowed (LOCK_FLAGS='--upgrade-package
# httpx' for one). tests/packaging/test_lock.py fails while the lock and pyproject.toml
# disagree. Needs the network (PyPI); the resolver, uv, is fetched into build/ once.
LOCK_DIR := packaging/lock
LOCKS := $(LOCK_DIR)/runtime.txt $(LOCK_DIR)/test.txt
UV_VERSION := 0.13.9
UV := build/uv-$(UV_VERSION)/bin/uv
UV_COMPILE = $(UV) pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock' $(if $(filter-out 0,$(UPGRADE)),--upgrade) $(LOCK_FLAGS)

# The agent, and the demo kit (demo/, a project of its own: simulators and a receiver for
# `make demo` and the tests; the .deb carries none of it).
$(STAMP): pyproject.toml demo/pyproject.toml $(LOCKS)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK_DIR)/test.txt
	$(BIN)/python -m pip install --quiet --no-deps -e . -e demo
	$(BIN)/python -m pip check || { echo "$(LOCK_DIR) is stale: run make lock" >&2; exit 1; }
	touch $(STAMP)

$(UV):
	$(PYTHON) -m venv --clear build/uv-$(UV_VERSION)
	build/uv-$(UV_VERSION)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# The test lock is constrained by the runtime one: tests run the versions the .deb ships.
lock: $(UV)
	$(UV_COMPILE) -o $(LOCK_DIR)/runtime.txt
	$(UV_COMPILE) --all-extras -c $(LOCK_DIR)/runtime.txt -o $(LOCK_DIR)/test.txt

demo: $(STAMP)
	$(BIN)/floorgate demo

# .ci/system-deps installs the system tools the tests use when they are missing (as root);
# .ci/odoo-servers prepares the real Odoo 18 and 19 servers from ../shared/odoo (cached).
test: $(STAMP)
	.ci/system-deps
	.ci/odoo-servers prepare
	$(BIN)/pytest

# A developer's loop (under 2 minutes): no root, no network, no system services, no browser; real
# pymodbus/asyncua servers and SQLite files on loopback still. CI runs `make test`.
FAST := not odoo and not mosquitto and not root and not slow and not browser
test-fast: $(STAMP)
	$(BIN)/pytest -m "$(FAST)" -q

# Only the Odoo destination, against the real servers (and the stand-in for faults).
test-odoo: $(STAMP)
	.ci/odoo-servers prepare
	$(BIN)/pytest tests/forwarders/odoo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# docs/configuration.md (from the schema), docs/sources|destinations/*.md (from the plugin
# READMEs), docs/performance.md (from bench/results); tests/docs fails when they drift.
docs: $(STAMP)
	$(BIN)/python docs/generate.py

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
