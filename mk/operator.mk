# Operator (issue 5): kopf handlers, CRDs (crds/), examples, the bulk copy engine.
#   make operator-test   the operator's tests (moto + kmock on loopback, ~1-2 min)
#   make operator-bench  zonemount cp vs s5cmd cp, 100 x 6.26 MB bucket->bucket on SeaweedFS
#   make crd-docs        regenerate docs/crds.md from crds/*.yaml (a test checks it is current)
#   make operator-run    run the operator against the current KUBECONFIG (all namespaces)
# Test-only packages not yet in pyproject.toml: cel-python (real CEL for the CRD rules) and
# pytest-asyncio (kmock's pytest plugin imports it; without it pytest cannot start at all).

OPERATOR_DEPS_STAMP := $(VENV)/.zonemount-operator-deps

.PHONY: operator-deps operator-test operator-bench crd-docs operator-run

setup: operator-deps

operator-deps: $(OPERATOR_DEPS_STAMP)

$(OPERATOR_DEPS_STAMP): $(STAMP) mk/operator.mk
	$(PIP) install -q "cel-python>=0.2" "pytest-asyncio>=0.23"
	@touch $@

operator-test: setup
	$(VENV)/bin/pytest tests/operator $(PYTEST_ARGS)

operator-bench: setup
	$(PY) tests/operator/bench_transfer.py

crd-docs: setup
	$(PY) -m zonemount_operator.crddoc crds > docs/crds.md

operator-run: setup
	$(VENV)/bin/zonemount operator --all-namespaces --liveness-port 8080
