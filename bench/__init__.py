"""zonemount's side-by-side benchmark suite (issue 3): ``python -m bench`` / ``make bench``.

Modules: :mod:`bench.runner` (the run and its CLI), :mod:`bench.clients` (how each client runs
each workload), :mod:`bench.fsload` and :mod:`bench.rawclient` (the workloads, run as child
processes), :mod:`bench.shaper` (the S3-shaped TCP proxy), :mod:`bench.report` (JSON, markdown,
ratios, targets, PNG). Results land in ``bench/results/``.
"""
