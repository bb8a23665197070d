"""Generators of the reference pages in docs/ (development tools, not shipped in the package).

Each module renders one page deterministically from its source of truth, and a test compares
the committed page with a fresh rendering: ``docgen.crds`` writes docs/crds.md from crds/*.yaml
(``make crd-docs``); ``docgen.helm_values`` writes the values reference of docs/helm.md from the
``# --`` comments of charts/zonemount/values.yaml (``make chart-docs``).
"""
