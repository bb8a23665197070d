# kind end-to-end (e2e/run.sh): needs a running Docker engine, kind and kubectl; helm (and a
# kubectl fallback) come from ./tools via chart-tools. The CRD copies in the chart are
# refreshed first so the cluster gets the CRDs in crds/. `make test` checks the scripts
# statically (tests/e2e); this target runs them for real.
.PHONY: e2e

e2e: chart-tools chart-crds
	bash e2e/run.sh
