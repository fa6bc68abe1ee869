"""Contact sheet of training samples with their boxes drawn in pixels (checked by eye).

The boxes are de-normalized from the Sample (normalized xyxy) back to the pixels of the
augmented image, exactly what the model is trained against: a box off its opacity here is a
data-path bug.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from cxrbox.boxes import denormalize_xyxy
from cxrbox.data.dataset import Sample
from cxrbox.errors import InputValueError
from cxrbox.figures import pyplot, save_figure

BOX_COLOR = "#ff3030"
CELL_INCHES = 3.2


def sample_title(sample: Sample) -> str:
    """`patientId` (8 chars) + box count (+ dropped count when any)."""
    k = len(sample.boxes)
    title = f"{sample.patient_id[:8]}  {k} box{'es' if k != 1 else ''}"
    if sample.n_dropped:
        title += f", {sample.n_dropped} dropped"
    return title


def draw_contact_sheet(
    samples: Sequence[Sample], out_path: str | Path, title: str | None = None
) -> Path:
    """Draw `samples` in a near-square grid, boxes as red rectangles, and save a PNG.

    samples: Sample.image [1, S, S] in [0, 1], Sample.boxes [K, 4] normalized xyxy.
    Returns the written path.
    """
    from matplotlib.patches import Rectangle

    plt = pyplot()

    if not samples:
        raise InputValueError("draw_contact_sheet: no samples to draw")
    out_path = Path(out_path)
    columns = math.ceil(math.sqrt(len(samples)))
    rows = math.ceil(len(samples) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * CELL_INCHES, rows * CELL_INCHES + 0.4), squeeze=False
    )
    try:
        for ax in axes.ravel():
            ax.axis("off")
        for ax, sample in zip(axes.ravel(), samples, strict=False):
            _, height, width = sample.image.shape
            # extent puts pixel i on [i, i + 1): the continuous coordinates the boxes use.
            ax.imshow(
                sample.image[0].numpy(),
                cmap="gray",
                vmin=0.0,
                vmax=1.0,
                extent=(0, width, height, 0),
                interpolation="nearest",
            )
            pixels = denormalize_xyxy(sample.boxes.reshape(-1, 4), width, height)
            for x1, y1, x2, y2 in pixels.tolist():
                ax.add_patch(
                    Rectangle(
                        (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=BOX_COLOR, linewidth=1.5
                    )
                )
            ax.set_title(sample_title(sample), fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10)
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, out_path, dpi=100)
