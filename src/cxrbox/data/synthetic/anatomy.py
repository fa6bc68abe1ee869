"""Procedural chest radiographs with pneumonia-like opacities (pure numpy + cv2).

`render_radiograph(rng, image_size, n_opacities)` draws one frontal chest X-ray: torso and
shoulders, two dark lung fields, heart and mediastinum, diaphragm domes, posterior and anterior
ribs, clavicles, spine, vascular markings, low-frequency texture, quantum noise, a random pose and
exposure per patient, and optional markers. Opacities come from `cxrbox.data.synthetic.opacity`:
each box is the bounding box of where its opacity exceeds a fraction of its peak, so the box can be
recovered only from the pixels.

Anatomy is a density map (larger = brighter) in a canonical upright frame (x right, y down, both
spanning [-EXTENT, EXTENT]); one affine warp then applies the patient's shift, scale and rotation.
Smooth fields are built at `FIELD_RES`; bones and vessels are periodic profiles looked up
(cv2.LUT) from smooth phase fields at `DETAIL_RES`, which keeps a 1024 px image near 25 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cxrbox.data.synthetic.opacity import MAX_OPACITIES, add_markers, place_opacities, smooth_noise
from cxrbox.errors import InputValueError

FIELD_RES = 256  # smooth fields (masks, opacities, texture, phases) are computed at this side
DETAIL_RES = 512  # bones, vessels, noise and the tone curve are applied at this side
EXTENT = 1.2  # the canonical frame spans [-EXTENT, EXTENT]; the image spans about [-1, 1]
MIN_IMAGE_SIZE = 64
_TONE_LEVELS = 4096  # entries of the density -> uint8 look-up table
_TONE_MAX = 1.6  # densities at or above this map to the table's last entry


@dataclass(frozen=True)
class Radiograph:
    """One rendered image.

    pixels (ndarray[S, S] uint8): MONOCHROME2 (air dark, bone bright).
    boxes (ndarray[K, 4] float32): xyxy, pixels, 0 <= x1 < x2 <= S; K = opacities placed.
    lungs (ndarray[S, S] uint8): 0 outside the lungs, 1 image-left lung, 2 image-right lung.
    """

    pixels: np.ndarray
    boxes: np.ndarray
    lungs: np.ndarray


def _f32(value: float) -> np.float32:
    return np.float32(value)


def _step(x: np.ndarray) -> np.ndarray:
    """Soft 0 -> 1 edge at x = 0 (a linear ramp with the logistic's slope; cheaper than tanh)."""
    return np.clip(0.5 + 0.25 * x, 0.0, 1.0)


def _gauss(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-(((x - centre) / width) ** 2))


def _resize(field: np.ndarray, side: int, cubic: bool = False) -> np.ndarray:
    if field.shape[0] == side:
        return field
    interp = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    return cv2.resize(field, (side, side), interpolation=interp)


def _axes(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical pixel-centre coordinates: x ndarray[1, side], y ndarray[side, 1], float32."""
    lin = ((np.arange(side, dtype=np.float32) + 0.5) * _f32(2.0 / side) - 1.0) * _f32(EXTENT)
    return lin[None, :], lin[:, None]


def _pose_matrix(rng: np.random.Generator) -> np.ndarray:
    """Random patient pose: ndarray[2, 3] mapping image coords (in [-1, 1]) to canonical coords."""
    scale = rng.uniform(0.86, 1.06)
    aspect = rng.uniform(0.93, 1.07)
    sx, sy = scale * aspect, scale / aspect
    angle = np.deg2rad(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0))
    centre = np.array([rng.uniform(-0.07, 0.07), rng.uniform(-0.05, 0.09)])
    c, s = np.cos(angle), np.sin(angle)
    lin = np.array([[c / sx, s / sx], [-s / sy, c / sy]])
    return np.hstack([lin, (-lin @ centre)[:, None]])


def _warp(canonical: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Resample a canonical-frame field ndarray[n, n] into the image frame (same side n)."""
    n = canonical.shape[0]
    # pixel p -> image coords u = p * 2/n + (1/n - 1) -> canonical c = pose(u) -> pixel q.
    k1, k0, k2 = 2.0 / n, 1.0 / n - 1.0, n / (2.0 * EXTENT)
    lin = pose[:, :2]
    a = k2 * k1 * lin
    b = k2 * (lin @ np.array([k0, k0]) + pose[:, 2]) + (n / 2.0 - 0.5)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    m = np.hstack([a, b[:, None]])
    return cv2.warpAffine(canonical, m, (n, n), flags=flags, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class _Shape:
    """Per-patient anatomy parameters (canonical units)."""

    body_hw: float  # torso half width
    lung_lat: float  # widest lateral lung border
    apex_y: float
    dome_r: float  # right hemidiaphragm (image left) dome height
    dome_l: float
    heart_cx: float
    heart_cy: float
    heart_a: float
    heart_b: float
    breast: float  # breast / soft-tissue shadow strength over the lower lungs
    bubble: float  # gastric bubble strength
    rib_start: float
    rib_spacing: float


def _draw_shape(rng: np.random.Generator) -> _Shape:
    dome_r = rng.uniform(0.32, 0.46)
    apex_y = rng.uniform(-0.8, -0.68)
    return _Shape(
        body_hw=rng.uniform(0.9, 1.02),
        lung_lat=rng.uniform(0.76, 0.86),
        apex_y=apex_y,
        dome_r=dome_r,
        dome_l=dome_r + rng.uniform(0.0, 0.08),
        heart_cx=rng.uniform(0.06, 0.12),
        heart_cy=rng.uniform(0.3, 0.4),
        heart_a=rng.uniform(0.34, 0.48),  # large hearts are a deliberate bright confounder
        heart_b=rng.uniform(0.24, 0.3),
        breast=rng.uniform(0.03, 0.12) if rng.random() < 0.4 else 0.0,
        bubble=rng.uniform(0.05, 0.15) if rng.random() < 0.5 else 0.0,
        rib_start=apex_y - 0.1 + rng.uniform(-0.02, 0.02),
        rib_spacing=rng.uniform(0.095, 0.112),
    )


def _anatomy(sh: _Shape, side: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Smooth anatomy in the canonical frame, every array [n, n] float32 at n = side.

    Returns (density, left lung, right lung, thorax): lungs are soft masks of the image-left and
    image-right lung fields; thorax is a soft rib-cage mask.
    """
    x, y = _axes(side)  # [1, n], [n, 1]
    k = _f32(1.0 / 0.016)  # edge sharpness
    ax = np.abs(x)
    # Torso: neck, sloping shoulders, arms cut by the image edge.
    shoulder_y = -0.95 + 0.3 * np.clip((ax - 0.18) / 0.75, 0.0, 1.0) ** 0.6  # [1, n]
    body = _step((sh.body_hw - ax) * (k / 2)) * _step((y - shoulder_y) * (k / 3))
    thick = np.sqrt(np.clip(1.0 - (x / (sh.body_hw + 0.05)) ** 2, 0.0, 1.0))  # [1, n]
    density = body * (0.4 + 0.16 * thick)

    # Diaphragm domes: highest near |x| = 0.42, dropping steeply to the costophrenic angles.
    dome_h = np.where(x < 0, _f32(sh.dome_r), _f32(sh.dome_l))
    drop = np.where(ax > 0.42, _f32(0.3), _f32(0.06))
    diaphragm = dome_h + drop * ((ax - 0.42) / 0.42) ** 2  # [1, n]
    below = _step((y - diaphragm) * k)
    density += 0.17 * below * body

    # Lung fields: lateral border follows the rib cage, rounded apices.
    lateral = sh.lung_lat - 0.3 * ((y - 0.3) / 1.1) ** 2  # [n, 1]
    apex = sh.apex_y + 1.4 * (ax - 0.4) ** 2  # [1, n]
    medial = 0.09 + 0.05 * np.clip(y + 0.2, 0.0, None)  # [n, 1]
    lung = _step((lateral - ax) * k) * _step((y - apex) * k) * _step((ax - medial) * k)
    lung *= 1.0 - below
    # Heart: an ellipse whose long axis tilts down toward the image right (patient's left).
    hu, hv = x - sh.heart_cx, y - sh.heart_cy
    heart_r = ((0.94 * hu + 0.34 * hv) / sh.heart_a) ** 2 + (
        (0.94 * hv - 0.34 * hu) / sh.heart_b
    ) ** 2
    heart = _step((1.0 - heart_r) * _f32(1 / 0.07))
    knob = _gauss(x, 0.12, 0.06) * _gauss(y, -0.32, 0.06)  # aortic knob
    lung *= (1.0 - heart) * (1.0 - knob)
    # Lung air; less dark at the bases and medially (more tissue in the beam).
    air = (0.33 - 0.04 * np.clip(y, -1.0, 1.0)) - 0.05 * _gauss(ax, 0.15, 0.12)
    density -= air * lung * body

    medi = _step((0.12 + 0.03 * np.clip(y + 0.3, 0.0, None) - ax) * k) * _step((y + 1.0) * k)
    cardiac = 0.17 * np.maximum(medi, heart) + 0.03 * heart * np.sqrt(np.clip(1 - heart_r, 0, 1))
    density += cardiac * (1.0 - below) + 0.1 * knob
    trachea = np.exp(-((x / 0.028) ** 4)) * (_step((-0.35 - y) * 20.0) * _step((y + 1.0) * k))
    density -= 0.1 * trachea

    # Hila, breast shadows, gastric bubble.
    for sgn in (-1.0, 1.0):
        density += 0.06 * _gauss(x, sgn * 0.2 + 0.02, 0.07) * _gauss(y, -0.02, 0.12)
        density += sh.breast * _gauss(x, sgn * 0.55, 0.3) * _gauss(y, 0.45, 0.2)
    if sh.bubble > 0:
        gx, gy = sh.heart_cx + 0.35, sh.dome_l + 0.1
        bubble = np.exp(-(((x - gx) / 0.09) ** 4)) * _gauss(y, gy, 0.05)
        density -= sh.bubble * bubble * below

    # Low-frequency texture over the whole body.
    density += body * (0.03 * smooth_noise(rng, 6, side) + 0.015 * smooth_noise(rng, 24, side))

    left, right = lung.copy(), lung
    left[:, side // 2 :] = 0.0
    right[:, : side // 2] = 0.0
    thorax = _step((sh.lung_lat + 0.06 - ax) * k) * _step((y - apex + 0.12) * k)
    thorax *= _step((diaphragm + 0.1 - y) * (k / 4))
    return density, left, right, thorax


def _band_lut(half: float, edge: float, periodic: bool) -> np.ndarray:
    """Bone cross-section sampled at 256 offsets: ndarray[256] float32, filled interior plus
    brighter cortical margins. Periodic tables put the bone at phase 0 (mod 1), others at 0.5."""
    f = (np.arange(256, dtype=np.float32) + 0.5) / 256
    d = np.abs(np.where(f < 0.5, f, f - 1.0) if periodic else f - 0.5)
    inside = np.clip((half - d) / edge, 0.0, 1.0)
    cortex = np.clip(1.0 - ((d - (half - edge)) / edge) ** 2, 0.0, 1.0)
    return (0.6 * inside + 0.5 * cortex).astype(np.float32)


_POSTERIOR_RIB = _band_lut(0.25, 0.08, periodic=True)
_ANTERIOR_RIB = _band_lut(0.2, 0.09, periodic=True)
_CLAVICLE = _band_lut(0.38 / 2, 0.05, periodic=False)
_RIDGE = np.exp(-((np.arange(256, dtype=np.float32) / 64 / 0.22) ** 2)).astype(np.float32)


def _lookup(phase: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table[frac(phase) * 256] for phase ndarray[n, n] float32 (>= 0)."""
    frac = phase - np.floor(phase)
    return cv2.LUT(cv2.convertScaleAbs(frac, alpha=255.99), table)


def _bones_and_vessels(
    sh: _Shape, thorax: np.ndarray, lungs: np.ndarray, d_res: int, rng: np.random.Generator
) -> np.ndarray:
    """Ribs, clavicles, spine and lung vessels in the canonical frame: density [D, D] float32.

    thorax, lungs (ndarray[F, F] float32): soft masks from `_anatomy`.
    """
    f_res = thorax.shape[0]
    x, y = _axes(f_res)
    ax = np.abs(x)
    wobble = 0.012 * smooth_noise(rng, 5, f_res)
    # Posterior ribs: rising slightly from the spine, then curving down laterally; the spacing
    # grows downward.
    t = np.clip(y - (0.8 * ax**2 - 0.3 * ax) + wobble - sh.rib_start, 0.0, None)
    phase = t / (sh.rib_spacing * (1.0 + 0.2 * t))
    post_amp = 0.07 * thorax * _step((10.4 - phase) * 20.0) * _step((t - 0.005) * 400.0)
    post_amp *= _step((ax - 0.07) * 260.0)
    # Anterior ribs: fainter, descending medially, ending at the costal cartilage.
    phase2 = np.clip(y + 0.45 * ax + wobble - (sh.apex_y + 0.22), 0.0, None)
    phase2 *= _f32(1.0 / (sh.rib_spacing * 1.3))
    ant_amp = 0.03 * thorax * _step((ax - 0.3) * 100.0) * _step((6.4 - phase2) * 16.0)
    # Clavicles: S-shaped bands from the sternal notch rising laterally.
    cy = sh.apex_y + 0.1 - 0.17 * ((ax - 0.08) / 0.6) + 0.025 * np.sin(ax * 6.0)  # [1, n]
    clav_phase = np.clip((y - cy) / 0.24 + 0.5, 0.0, 0.999)
    clav_amp = np.broadcast_to(
        0.1 * _step((ax - 0.06) * 400.0) * _step((0.72 - ax) * 200.0), t.shape
    )
    # Vessels: ridges of smooth noise, densest at the hila, only inside the lungs.
    hilum = np.exp(-2.2 * np.sqrt(((ax - 0.2) / 0.5) ** 2 + ((y + 0.02) / 0.7) ** 2))
    vessel_amp = (0.012 + 0.045 * hilum) * lungs
    n1, n2 = smooth_noise(rng, 36, f_res), smooth_noise(rng, 72, f_res)

    phases = np.stack([phase, phase2, clav_phase, n1, n2], axis=-1)  # [F, F, 5]
    amps = np.stack([post_amp, ant_amp, clav_amp, vessel_amp], axis=-1)  # [F, F, 4]
    phases = _resize(np.ascontiguousarray(phases), d_res)
    amps = _resize(np.ascontiguousarray(amps, dtype=np.float32), d_res)
    out = amps[..., 0] * _lookup(phases[..., 0], _POSTERIOR_RIB)
    out += amps[..., 1] * _lookup(phases[..., 1], _ANTERIOR_RIB)
    out += amps[..., 2] * _lookup(phases[..., 2], _CLAVICLE)
    ridge1 = cv2.LUT(cv2.convertScaleAbs(phases[..., 3], alpha=64), _RIDGE)
    ridge2 = cv2.LUT(cv2.convertScaleAbs(phases[..., 4], alpha=64), _RIDGE)
    out += amps[..., 3] * (ridge1 + 0.6 * ridge2)

    # Spine: vertebral bodies (periodic in y) and pedicles, separable so built at D directly.
    xd, yd = _axes(d_res)
    spine_x = np.exp(-((xd / 0.065) ** 4)) + 0.5 * _gauss(np.abs(xd), 0.05, 0.012)
    vert = 0.75 + 0.25 * np.cos((2.0 * np.pi / 0.085) * (yd - rng.uniform(0.0, 0.085)))
    out += (0.06 * spine_x) * (vert * _step((yd + 1.0) * 100.0))
    return out


def _tone_table(rng: np.random.Generator) -> np.ndarray:
    """Density -> uint8 look-up table, ndarray[_TONE_LEVELS] uint8: a soft shoulder and gamma."""
    v = np.linspace(0.0, _TONE_MAX, _TONE_LEVELS)
    shaped = (np.tanh(1.3 * v) / np.tanh(1.3)) ** rng.uniform(0.8, 1.25)
    return np.clip(shaped * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_radiograph(rng: np.random.Generator, image_size: int, n_opacities: int) -> Radiograph:
    """Render one synthetic frontal chest radiograph with `n_opacities` (0..4) opacities.

    Fewer boxes than asked come back only if an opacity cannot be placed apart from the others
    (rare). Pure: the result depends only on the generator's seed sequence and the arguments;
    anatomy, opacities and detector draw from separate streams spawned from `rng`, so the same
    `rng` seed with another `n_opacities` gives the same radiograph with other opacities.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise InputValueError(f"image_size: expected an int, got {image_size!r}")
    if image_size < MIN_IMAGE_SIZE:
        raise InputValueError(f"image_size: expected >= {MIN_IMAGE_SIZE}, got {image_size}")
    if not 0 <= n_opacities <= MAX_OPACITIES:
        raise InputValueError(f"n_opacities: expected 0..{MAX_OPACITIES}, got {n_opacities!r}")
    size = int(image_size)
    f_res, d_res = min(size, FIELD_RES), min(size, DETAIL_RES)
    # Separate streams, so the opacity count changes nothing but the opacities.
    anatomy_rng, opacity_rng, detector_rng = rng.spawn(3)
    pose, shape = _pose_matrix(anatomy_rng), _draw_shape(anatomy_rng)
    density, left, right, thorax = _anatomy(shape, f_res, anatomy_rng)
    detail = _bones_and_vessels(shape, thorax, left + right, d_res, anatomy_rng)
    dens = _warp(_resize(density, d_res) + detail, pose)  # [D, D], image frame

    lungs = np.stack([_warp(left, pose), _warp(right, pose)])  # [2, F, F], image frame
    opacity, boxes = place_opacities(opacity_rng, lungs, n_opacities)
    if len(boxes):
        dens += _f32(opacity_rng.uniform(0.22, 0.36)) * _resize(opacity, d_res)

    # Detector: exposure and contrast, a heel-effect gradient, quantum noise (stronger where
    # fewer photons arrive), then the tone curve. Upsampling to 1024 correlates the noise over
    # about two pixels, like a detector's blur.
    det = detector_rng
    gain, bias = _f32(det.uniform(0.82, 1.1)), det.uniform(-0.04, 0.05)
    ramp = np.linspace(-1.0, 1.0, d_res, dtype=np.float32) * _f32(det.uniform(-0.06, 0.06))
    offset = _f32(bias) + (ramp[:, None] if det.random() < 0.5 else ramp[None, :])
    dens = dens * gain + offset
    sigma = _f32(det.uniform(0.05, 0.1))
    dens += (det.random((d_res, d_res), dtype=np.float32) - 0.5) * (sigma * (0.5 + dens))
    index = np.clip(dens * _f32(_TONE_LEVELS / _TONE_MAX), 0, _TONE_LEVELS - 1)
    pixels = _resize(_tone_table(det)[index.astype(np.uint16)], size)
    add_markers(det, pixels)

    labels = (lungs[0] > 0.5).astype(np.uint8) + 2 * (lungs[1] > 0.5).astype(np.uint8)
    if f_res != size:
        labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
    boxes_px = np.clip(boxes * _f32(size / f_res), 0, size).astype(np.float32)
    return Radiograph(pixels=pixels, boxes=boxes_px, lungs=labels)
