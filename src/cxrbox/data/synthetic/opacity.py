"""Pneumonia-like opacities and film markers for the synthetic radiographs.

An opacity is a few anisotropic gaussian lobes (their pointwise maximum) times a patchy texture,
masked by one lung field. Its ground-truth box is the bounding box of where the opacity exceeds
`BOX_LEVEL` of its own peak, measured on the same field that is drawn into the image, so a box is
recoverable from the pixels alone.
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_LEVEL = 0.3  # a box spans where its opacity exceeds this fraction of the opacity's peak
MAX_OPACITIES = 4
# P(k boxes | positive image) for k = 1..4, close to RSNA stage 2 (mostly one or two boxes).
BOX_COUNT_PROBS = (0.5, 0.45, 0.04, 0.01)
MAX_PAIR_IOU = 0.1  # opacities of one image are separate: their boxes barely overlap
_MIN_SIDE, _MAX_WIDTH, _MAX_HEIGHT = 0.08, 0.42, 0.48  # accepted box sides, fraction of image
_ATTEMPTS = 40

_MARKER_TEXTS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "ERECT", "UPRIGHT")


def smooth_noise(rng: np.random.Generator, cells: int, side: int) -> np.ndarray:
    """Smooth noise, ndarray[side, side] float32, about unit std, features ~ side / cells."""
    grid = rng.standard_normal((cells, cells), dtype=np.float32)
    return cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC) * np.float32(1.25)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes, each ndarray[4]."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _opacity(
    rng: np.random.Generator,
    lung: np.ndarray,
    seeds: tuple[np.ndarray, np.ndarray, np.ndarray],
    texture: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """One opacity in `lung` (ndarray[F, F] soft mask), or None if its box is too small/large.

    seeds: (xs, ys, p) candidate centre pixels inside the lung and their probabilities.
    Returns (field ndarray[F, F] float32 with peak 1, box ndarray[4] float32 xyxy, field px).
    """
    side = lung.shape[0]
    xs, ys, p = seeds
    i = rng.choice(xs.size, p=p)
    cx, cy = xs[i] + rng.uniform(-0.5, 0.5), ys[i] + rng.uniform(-0.5, 0.5)
    # The box side at BOX_LEVEL of a gaussian is 2 sigma sqrt(2 ln(1 / BOX_LEVEL)).
    k = 2.0 * np.sqrt(2.0 * np.log(1.0 / BOX_LEVEL))
    w = rng.uniform(0.14, 0.34) * side
    h = w * rng.uniform(1.0, 1.8)
    sx, sy = w / k, h / k
    lin = np.arange(side, dtype=np.float32)
    field = np.zeros((side, side), np.float32)
    for j in range(int(rng.integers(2, 5))):
        if j == 0:
            ox, oy, amp, f = 0.0, 0.0, 1.0, 1.0
        else:
            ox, oy = rng.uniform(-0.8, 0.8) * sx, rng.uniform(-0.8, 0.8) * sy
            amp, f = rng.uniform(0.4, 0.9), rng.uniform(0.45, 0.8)
        gx = np.exp(-0.5 * ((lin - np.float32(cx + ox)) / np.float32(sx * f)) ** 2)  # [F]
        gy = np.exp(-0.5 * ((lin - np.float32(cy + oy)) / np.float32(sy * f)) ** 2)  # [F]
        np.maximum(field, np.float32(amp) * gy[:, None] * gx[None, :], out=field)
    field *= texture * lung
    peak = field.max()
    if peak <= 0:
        return None
    field /= peak
    above = field >= BOX_LEVEL
    rows = np.flatnonzero(above.any(axis=1))
    cols = np.flatnonzero(above.any(axis=0))
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
    bw, bh = (box[2] - box[0]) / side, (box[3] - box[1]) / side
    if not (_MIN_SIDE <= bw <= _MAX_WIDTH and _MIN_SIDE <= bh <= _MAX_HEIGHT):
        return None
    return field, box


def _seeds(lung: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Candidate centres well inside a lung, weighted toward the middle and lower zones."""
    ys, xs = np.nonzero(lung > 0.9)
    if xs.size == 0:
        return None
    weight = 0.3 + (ys - ys.min()) / max(int(ys.max() - ys.min()), 1)
    return xs, ys, weight / weight.sum()


def place_opacities(
    rng: np.random.Generator, lungs: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to n separate opacities in lungs ndarray[2, F, F] (soft masks, image frame).

    Returns (field ndarray[F, F] float32, sum of the opacities, each with peak in [0.75, 1];
    boxes ndarray[K, 4] float32 xyxy in field pixels, K <= n). Two opacities go one per lung.
    """
    side = lungs.shape[1]
    total = np.zeros((side, side), np.float32)
    boxes: list[np.ndarray] = []
    seeds = [_seeds(lungs[0]), _seeds(lungs[1])]
    if n == 0 or (seeds[0] is None and seeds[1] is None):
        return total, np.zeros((0, 4), np.float32)
    # Patchy texture: consolidated regions with darker, air-bronchogram-like gaps.
    texture = 0.62 + 0.26 * smooth_noise(rng, 20, side) + 0.1 * smooth_noise(rng, 50, side)
    texture = np.clip(texture, 0.12, 1.2)
    first = int(rng.integers(0, 2))
    for j in range(n):
        which = (first + j) % 2 if j < 2 else int(rng.integers(0, 2))
        for attempt in range(_ATTEMPTS):
            if attempt % 8 == 7 or seeds[which] is None:
                which = 1 - which
            seed = seeds[which]
            if seed is None:  # attempt 8k+7 flipped to a lung without candidates: next attempt
                continue
            got = _opacity(rng, lungs[which], seed, texture)
            if got is not None and all(box_iou(got[1], b) < MAX_PAIR_IOU for b in boxes):
                total += got[0] * np.float32(rng.uniform(0.75, 1.0))
                boxes.append(got[1])
                break
    return total, np.asarray(boxes, np.float32).reshape(-1, 4)


def add_markers(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw a bright text marker (sometimes on a plate) in a corner, and now and then a lead
    wire across the chest, into img (ndarray[S, S] uint8) in place."""
    side = img.shape[0]
    scale = side / 1024
    if rng.random() < 0.55:
        text = str(rng.choice(_MARKER_TEXTS))
        font_scale = float(rng.uniform(1.2, 2.4) * scale)
        thick = max(1, round(3 * scale))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        corner = int(rng.integers(0, 4))
        margin = int(0.03 * side)
        x0 = margin if corner % 2 == 0 else side - margin - tw
        y0 = margin + th if corner < 2 else side - margin
        if rng.random() < 0.5:
            pad = max(1, round(8 * scale))
            cv2.rectangle(img, (x0 - pad, y0 - th - pad), (x0 + tw + pad, y0 + pad), 235, -1)
            cv2.putText(img, text, (x0, y0), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 40, thick)
        else:
            cv2.putText(img, text, (x0, y0), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 250, thick)
    if rng.random() < 0.12:
        # An ECG lead crossing the chest: a thin bright curve, a confounder over the lungs.
        xs = np.linspace(rng.uniform(0.05, 0.4), rng.uniform(0.6, 0.95), 12)
        ys = rng.uniform(0.2, 0.8) + 0.08 * np.sin(np.linspace(0.0, rng.uniform(2, 6), 12))
        pts = (np.stack([xs, ys], axis=1) * side).astype(np.int32)
        cv2.polylines(img, [pts], False, 225, max(1, round(3 * scale)), cv2.LINE_AA)
