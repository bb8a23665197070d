# Benchmarks (issue 3): `make bench` runs the side-by-side suite of bench/ (see docs/benchmarks.md).
# BENCH_ARGS passes options through, e.g.
#   make bench BENCH_ARGS="--profile loopback --workloads 1,3,6 --size-gib 0.25"
# s3fs-fuse and fio are small Debian packages; the smoke test in `make test` uses s3fs too.
EXTRA_APT_PACKAGES += s3fs fio
BENCH_ARGS ?=

.PHONY: bench-smoke
bench: setup
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

bench-smoke: setup
	$(VENV)/bin/pytest -m bench tests/bench $(PYTEST_ARGS)
