# Spark on the mount (issue 7): real pyspark jobs (local mode, Java 17) read and commit output
# through zonemount mounts. `make test` runs tests/spark (marker `spark`); `make bench` runs
# bench/spark.py (zonemount vs local disk vs s3fs-fuse over SeaweedFS).
#   make spark-test                  only the Spark tier (~3-4 min on 2 cores)
#   make bench-spark SPARK_ROWS=...  only the Spark benchmark (default 3,000,000 rows; with
#                                    and without .crc side files; then without them and with
#                                    SeaweedFS on its own CPU, as S3 is off an EKS node)
# pyspark 3.5.x bundles Hadoop 3.3.4 and runs on Java 8/11/17; Spark never downloads anything
# (no spark.jars.packages), so the tier runs offline once pip has installed the wheel.
# pyspark comes from pyproject's dev extra; Java 17 from apt (below).

SPARK_ROWS ?= 3000000
SPARK_REPEATS ?= 2
EXTRA_APT_PACKAGES += openjdk-17-jre-headless

.PHONY: spark-test bench-spark

spark-test: setup
	$(VENV)/bin/pytest -m spark tests/spark $(PYTEST_ARGS)

bench: bench-spark

# Twice: as Spark writes by default (a .crc side file beside each file), and with the
# write options docs/spark.md recommends for mounts (no .crc files), each against local disk
# written the same way. A third run puts SeaweedFS on the last CPU and the job on the others
# (--server-cpus): the production shape, where the S3 server's CPU is not the job's.
bench-spark: setup
	$(PY) -m bench.spark --rows $(SPARK_ROWS) --repeats $(SPARK_REPEATS) --out bench/results
	$(PY) -m bench.spark --rows $(SPARK_ROWS) --repeats $(SPARK_REPEATS) --out bench/results \
	  --no-checksum-files
	if [ "$$(nproc)" -gt 1 ]; then \
	  $(PY) -m bench.spark --rows $(SPARK_ROWS) --repeats $(SPARK_REPEATS) --out bench/results \
	    --no-checksum-files --targets local,zonemount,zonemount-v2 \
	    --server-cpus last; \
	fi
