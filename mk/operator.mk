# Operator (issue 5): kopf handlers, CRDs (crds/), examples, the bulk copy engine.
#   make operator-test   the operator's tests (moto + kmock on loopback, ~1-2 min)
#   make operator-bench  zonemount cp vs s5cmd cp, 100 x 6.26 MB bucket->bucket on SeaweedFS
#   make bench-bulkcopy  zonemount cp/sync vs s5cmd: S3->S3, local->S3, S3->local, 20,000 x 16 KiB
#                        and 100 x 6.26 MB (5 rounds), plus engine memory vs object count
#                        (part of make bench)
#   make crd-docs        regenerate docs/crds.md from crds/*.yaml (a test checks it is current)
#   make operator-run    run the operator against the current KUBECONFIG (all namespaces)
# Its test-only packages (cel-python, pytest-asyncio, kmock) come from pyproject's dev extra.

.PHONY: operator-test operator-bench crd-docs operator-run bench-bulkcopy

# GNU time measures the copying processes (CPU, peak RSS).
EXTRA_APT_PACKAGES += time
BULKCOPY_ARGS ?= --small 20000 --large 100 --large-rounds 5
bench: bench-bulkcopy

bench-bulkcopy: setup
	$(PY) -m bench.bulkcopy $(BULKCOPY_ARGS)
	$(PY) -m bench.bulkcopy_memory --counts 20000,200000,2000000

operator-test: setup
	$(VENV)/bin/pytest tests/operator $(PYTEST_ARGS)

operator-bench: setup
	$(PY) -m bench.transfer

crd-docs: setup
	$(PY) -m docgen.crds crds > docs/crds.md

operator-run: setup
	$(VENV)/bin/zonemount operator --all-namespaces --liveness-port 8080
