"""cxrbox: a box-regression trainer for chest X-rays that cannot stall silently."""

import os

# albumentations checks PyPI for updates at import time unless told not to; cxrbox must never
# wait on the network, so this is set before any submodule can import albumentations.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
