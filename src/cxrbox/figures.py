"""Figures off-screen and PNGs that appear whole: matplotlib's Agg backend, atomic saves.

Every plot cxrbox draws (training curves, validation samples, contact sheets, parity reports)
is made with `pyplot()` and written with `save_figure`, so an interrupted run never leaves a
half-written PNG (see `cxrbox.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrbox.atomic_write import atomic_path


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed); imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out `fig`, write it to `path` (PNG, atomically) and close it; returns `path`."""
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        pyplot().close(fig)
    return path
