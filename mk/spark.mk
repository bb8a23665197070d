# Spark on the mount (issue 7): real pyspark jobs (local mode, Java 17) read and commit output
# through zonemount mounts. `make test` runs tests/spark (marker `spark`); `make bench` runs
# tests/spark/bench_spark.py (zonemount vs local disk vs s3fs-fuse over SeaweedFS).
#   make spark-test                  only the Spark tier (~3-4 min on 2 cores)
#   make bench-spark SPARK_ROWS=...  only the Spark benchmark (default 3,000,000 rows)
# pyspark 3.5.x bundles Hadoop 3.3.4 and runs on Java 8/11/17; Spark never downloads anything
# (no spark.jars.packages), so the tier runs offline once pip has installed the wheel.
# Not in pyproject yet: the lead adds `pyspark==3.5.3` to the dev extra; until then this installs it.

PYSPARK_VERSION := 3.5.3
SPARK_DEPS_STAMP := $(VENV)/.zonemount-spark-deps-$(PYSPARK_VERSION)
SPARK_ROWS ?= 3000000
SPARK_REPEATS ?= 2
EXTRA_APT_PACKAGES += openjdk-17-jre-headless

.PHONY: spark-deps spark-test bench-spark

setup: spark-deps

spark-deps: $(SPARK_DEPS_STAMP)

$(SPARK_DEPS_STAMP): $(STAMP) mk/spark.mk
	@$(PY) -c 'import importlib.metadata as m, sys; sys.exit(m.version("pyspark") != "$(PYSPARK_VERSION)")' 2>/dev/null \
	  || $(PIP) install -q "pyspark==$(PYSPARK_VERSION)"
	@touch $@

spark-test: setup
	$(VENV)/bin/pytest -m spark tests/spark $(PYTEST_ARGS)

bench: bench-spark

bench-spark: setup
	$(PY) -m tests.spark.bench_spark --rows $(SPARK_ROWS) --repeats $(SPARK_REPEATS) --out bench/results
