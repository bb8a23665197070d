"""``python -m bench``: run the benchmark (see ``python -m bench --help``)."""

import sys

from bench.runner import main

sys.exit(main())
