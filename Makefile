# zonemount: the entry points. A newcomer runs `make demo` and `make test`; both set up
# everything they need (apt packages, the virtual environment in .venv/) on a fresh machine.
#
# Area-specific targets live in mk/*.mk (one file per area, so parallel work does not collide).
# An area adds set-up steps with `setup: its-target` and apt packages with
# `EXTRA_APT_PACKAGES += name`.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The editable install maps each top-level package by name, so adding one (as
# zonemount_contract was) needs a reinstall: the stamp's name carries the package list.
PKG_HASH := $(shell ls -d csi-driver/*/__init__.py operator/*/__init__.py 2>/dev/null | md5sum | cut -c1-8)
STAMP := $(VENV)/.zonemount-installed-$(PKG_HASH)
APT_PACKAGES := fuse3 libfuse3-dev pkg-config
PYTEST_ARGS ?=

.PHONY: help setup apt test test-unit test-integration lint fmt demo bench e2e clean

help:
	@echo "make setup  - install apt packages and the Python environment in .venv/ (~4-6 min first time)"
	@echo "make demo   - the end-to-end walkthrough on an embedded S3 server (installs what it needs)"
	@echo "make test   - every test tier: unit, integration (real S3, real FUSE, real gRPC), spark, smoke"
	@echo "make lint   - ruff + mypy --strict"
	@echo "make bench  - side-by-side benchmarks against s3fs-fuse, rclone and s5cmd"
	@echo "make e2e    - kind cluster end to end (needs Docker)"

# Debian packages the FUSE client needs (root on CI/dev machines; sudo otherwise).
apt:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo ">> installing apt packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@echo ">> installing zonemount and its Python packages into $(VENV)/ (first run: ~3-5 min, ~1.5 GB)"
	$(PIP) install -q --upgrade pip
	$(PIP) install --progress-bar on -e '.[dev,bench]'
	@rm -f $(VENV)/.zonemount-installed*; touch $@

setup: apt $(STAMP)

# --durations: every run ends with the slowest tests, so the minutes have names.
DURATIONS := --durations=25

test: setup
	$(VENV)/bin/pytest $(DURATIONS) $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/pytest -m unit $(DURATIONS) $(PYTEST_ARGS)

test-integration: setup
	$(VENV)/bin/pytest -m integration $(DURATIONS) $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check csi-driver operator tests bench docgen e2e
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format csi-driver operator tests bench docgen e2e
	$(VENV)/bin/ruff check --fix .

demo: setup
	$(VENV)/bin/zonemount demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
