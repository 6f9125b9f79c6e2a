"""The core benchmark, run from a checkout: `python bench/bench_core.py [options]`.

The code lives in the package (mlx_interp/bench_core.py) so that `mlx-interp bench`
works from an installed wheel too; this file keeps the documented command working.
"""

import sys

from mlx_interp.bench_core import main

if __name__ == "__main__":
    sys.exit(main())
