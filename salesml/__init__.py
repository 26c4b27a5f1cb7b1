"""salesml: which deals will close, and how much of each SKU each customer buys in the next hours."""

__version__ = "0.1.0"

import os as _os

# LightGBM's OpenMP threads spin while waiting by default; on a shared 2-core machine that made
# 2 threads 4.5x slower than 1 (measured). Passive waiting must be set before lightgbm loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
