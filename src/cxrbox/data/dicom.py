"""Read 2-D single-frame grayscale DICOM images as float32 arrays in [0, 1].

Supported transfer syntaxes: implicit/explicit VR little endian, deflated explicit VR little
endian, explicit VR big endian (all native pixel data), and the compressed syntaxes of
`DECODING_PLUGINS`, each decoded by a pydicom plugin named explicitly (left to itself pydicom
tries gdcm, then pylibjpeg, then Pillow, whichever happens to be installed). The first plugin of
a syntax's list that is installed is used; the order is by measured speed (one core, 1024 x 1024
12-bit image, under load: see `cxrbox bench`/tests/benchmarks/test_bench_dicom.py) and license:

- JPEG Baseline: Pillow (fastest; what the RSNA files use).
- JPEG Extended: Pillow for 8-bit; 12-bit only with pylibjpeg-libjpeg (GPL-3.0, so optional:
  `pip install cxrbox[gpl-codecs]`); gdcm and Pillow refuse 12-bit.
- JPEG Lossless (Process 14, SV1): gdcm (Apache-2.0; 47-69 ms vs libjpeg's 88 ms), then
  pylibjpeg-libjpeg when installed.
- JPEG-LS lossless and near-lossless: gdcm, then pyjpegls (MIT). pyjpegls (CharLS) is as fast
  on valid files (42 vs 46 ms lossless, 35 vs 70 near-lossless) but took 15 s to reject one
  fuzzed stream (tests/unit/test_fuzz_inputs.py) that gdcm rejected in 1 ms.
- JPEG 2000 lossless and lossy, HTJ2K: pylibjpeg-openjpeg (MIT; 58-120 ms, gdcm and Pillow
  within 20 %; the only one with HTJ2K), then gdcm.
- RLE Lossless: pylibjpeg-rle (MIT; 7 ms vs pydicom's own 79 ms), then pydicom's own.

Intensity rule of `load_pixels` (output brighter = denser, the MONOCHROME2 convention):

1. Modality: a Modality LUT Sequence maps stored values through its table; otherwise
   RescaleSlope/RescaleIntercept (defaults 1 and 0) apply.
2. VOI: a VOI LUT Sequence (preferred when both are present) maps its table's output range
   [min, max] of the LUT data onto [0, 1]; otherwise WindowCenter/WindowWidth (first value when
   several, VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID, DICOM PS3.3 C.11.2.1.2) map the
   window onto [0, 1].
3. No VOI (no VOI LUT, no window): the `intensity` rule (config field `intensity`):
   - "auto" (default): "bit-range" for BitsStored <= 8, "percentile" above. 8-bit files without
     a window (RSNA, SIIM: secondary captures) were made for display already and load exactly
     as before (value / 255); 12-16-bit CR/DX files hold raw detector values that use a small,
     arbitrary part of their range.
   - "percentile": the image's own 0.5th and 99.5th percentiles (PERCENTILES) after the
     modality step map onto [0, 1] (a constant image gives 0). Measured on CR-like synthetic
     images (tests/unit/test_dicom_intensity.py: anatomy contrast p95 - p5 inside the body, with
     a burned-in label and dead pixels): 0.50 for 12-bit, 16-bit unsigned and 16-bit signed,
     MONOCHROME1 and 2 alike; the bit range gave 0.44, 0.24 and 0.04, min-max 0.44, 0.38 and
     0.29 (outliers set its range).
   - "bit-range": the stored bit range maps onto [0, 1]: [0, 2**BitsStored - 1] unsigned,
     [-2**(BitsStored-1), 2**(BitsStored-1) - 1] signed (so 8-bit unsigned gives value / 255);
     a rescale is affine, so it only matters through its sign (RescaleSlope < 0 flips); with a
     Modality LUT the table's output range [min, max] is used instead.
4. The result is clipped to [0, 1], and MONOCHROME1 becomes 1 - x.

Every failure, for any file, is a `DicomError` whose message names the file and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi, pixel_array
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14

from cxrbox.errors import DataError, DicomError, InputValueError
from cxrbox.options import DEFAULT_INTENSITY, INTENSITY_RULES

__all__ = [
    "DECODING_PLUGINS",
    "DEFAULT_INTENSITY",
    "INTENSITY_RULES",
    "JPEG_DECODING_PLUGIN",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "DicomError",
    "find_dicom_files",
    "load_pixels",
    "read_image_size",
]

# pydicom decoding plugin used for JPEG Baseline (see the module docstring).
JPEG_DECODING_PLUGIN = "pillow"

NATIVE_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    }
)
# Compressed syntax -> pydicom decoding plugins in order of preference (module docstring).
DECODING_PLUGINS: dict[str, tuple[str, ...]] = {
    JPEGBaseline8Bit: (JPEG_DECODING_PLUGIN,),
    JPEGExtended12Bit: ("pillow",),  # 8-bit samples; 12-bit: TWELVE_BIT_JPEG_PLUGINS
    JPEGLosslessP14: ("gdcm", "pylibjpeg"),
    JPEGLosslessSV1: ("gdcm", "pylibjpeg"),
    JPEGLSLossless: ("gdcm", "pyjpegls"),
    JPEGLSNearLossless: ("gdcm", "pyjpegls"),
    JPEG2000Lossless: ("pylibjpeg", "gdcm"),
    JPEG2000: ("pylibjpeg", "gdcm"),
    HTJ2KLossless: ("pylibjpeg",),
    HTJ2KLosslessRPCL: ("pylibjpeg",),
    HTJ2K: ("pylibjpeg",),
    RLELossless: ("pylibjpeg", "pydicom"),
}
TWELVE_BIT_JPEG_PLUGINS = ("pylibjpeg",)
# What to install for a plugin, by syntax family (for the error when none is installed).
_PACKAGES = {
    "pillow": "pillow",
    "gdcm": "python-gdcm",
    "pyjpegls": "pyjpegls",
    "pydicom": "pydicom",
}
_PYLIBJPEG_PACKAGES: dict[str, str] = {
    JPEGExtended12Bit: "pylibjpeg-libjpeg (GPL-3.0: pip install cxrbox[gpl-codecs])",
    JPEGLosslessP14: "pylibjpeg-libjpeg (GPL-3.0: pip install cxrbox[gpl-codecs])",
    JPEGLosslessSV1: "pylibjpeg-libjpeg (GPL-3.0: pip install cxrbox[gpl-codecs])",
    RLELossless: "pylibjpeg-rle",
}
SUPPORTED_TRANSFER_SYNTAXES: frozenset[str] = NATIVE_TRANSFER_SYNTAXES | set(DECODING_PLUGINS)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")

# What maps to [0, 1] when a file has no VOI LUT and no window (module docstring, step 3):
# INTENSITY_RULES and DEFAULT_INTENSITY come from cxrbox.options.
PERCENTILES = (0.5, 99.5)


def load_pixels(path: str | Path, *, intensity: str = DEFAULT_INTENSITY) -> np.ndarray:
    """Return the image in `path` as float32 [H, W] in [0, 1], brighter = denser.

    `intensity`: the rule for files without a VOI LUT or window, one of INTENSITY_RULES (see
    the module docstring). Raises `DicomError` (and nothing else) when the file is missing, not
    DICOM, truncated, colour, multi-frame, without pixel data, in an unsupported transfer
    syntax, or otherwise unreadable; InputValueError for an unknown `intensity`.
    """
    check_intensity(intensity)
    path = Path(path)
    try:
        ds = _read(path, stop_before_pixels=False)
        tsyntax = _check_header(ds)
        if "PixelData" not in ds:
            raise _Invalid("no (7FE0,0010) Pixel Data element")
        if tsyntax in DECODING_PLUGINS:
            stored = pixel_array(ds, decoding_plugin=decoding_plugin(ds, tsyntax))
        else:
            # A read-only view of the bytes, unless pydicom must mask unused high bits anyway.
            view_only = ds.BitsStored == ds.BitsAllocated and ds.BitsAllocated in (8, 16, 32)
            stored = pixel_array(ds, view_only=view_only)
        if stored.ndim != 2:
            raise _Invalid(f"decoded pixel array has shape {stored.shape}, expected [rows, cols]")
        out = _to_unit_range(stored, ds, intensity)
    except _Invalid as exc:
        raise DicomError(f"{path}: {exc}") from None
    except Exception as exc:  # pydicom/numpy/OS failures of any kind: one error type out
        raise DicomError(f"{path}: cannot read pixels ({type(exc).__name__}: {exc})") from exc
    except BaseException as exc:
        if not _is_decoder_panic(exc):
            raise
        raise DicomError(f"{path}: decoder crashed ({type(exc).__name__}: {exc})") from exc
    return out


def _is_decoder_panic(exc: BaseException) -> bool:
    """A Rust decoder's panic (pyo3 PanicException, e.g. pylibjpeg-rle on damaged data): it
    derives from BaseException, so `except Exception` does not see it."""
    return type(exc).__name__ == "PanicException"


def check_intensity(intensity: str) -> None:
    """Raise InputValueError unless `intensity` is one of INTENSITY_RULES."""
    if intensity not in INTENSITY_RULES:
        raise InputValueError(f"intensity must be one of {INTENSITY_RULES}, got {intensity!r}")


def read_image_size(path: str | Path) -> tuple[int, int]:
    """Return (rows, columns) of the image in `path` from a header-only read.

    The header is checked as `load_pixels` checks it (transfer syntax, grayscale, single frame),
    so a file that passes can still fail `load_pixels` only on its pixel data.
    """
    path = Path(path)
    try:
        ds = _read(path, stop_before_pixels=True)
        _check_header(ds)
        size = int(ds.Rows), int(ds.Columns)
    except _Invalid as exc:
        raise DicomError(f"{path}: {exc}") from None
    except Exception as exc:
        raise DicomError(f"{path}: cannot read header ({type(exc).__name__}: {exc})") from exc
    return size


def find_dicom_files(images_dir: str | Path) -> dict[str, Path]:
    """Map patientId (file stem) -> path for every `*.dcm` file in `images_dir`, sorted by name.

    Raises `DataError` when `images_dir` is not an existing folder.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: image folder does not exist (expected a folder of *.dcm)")
    return {p.stem: p for p in sorted(images_dir.glob("*.dcm")) if p.is_file()}


class _Invalid(Exception):
    """A reason to reject a file, turned into `DicomError` with the file name by the caller."""


def _read(path: Path, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise _Invalid("not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None


def _check_header(ds: Dataset) -> UID:
    """Check the header elements `load_pixels` relies on; return the transfer syntax."""
    tsyntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if not tsyntax:
        raise _Invalid("no (0002,0010) Transfer Syntax UID in the file meta information")
    tsyntax = UID(tsyntax)
    if tsyntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise _Invalid(
            f"unsupported transfer syntax {tsyntax.name!r} ({tsyntax}); expected an uncompressed "
            "syntax, JPEG (Baseline, Extended, Lossless), JPEG-LS, JPEG 2000, HTJ2K or RLE"
        )
    for keyword in ("Rows", "Columns"):
        value = ds.get(keyword)
        if _is_empty(value):
            raise _Invalid(f"missing {keyword}")
        if int(value) <= 0:
            raise _Invalid(f"{keyword} is {value}, expected > 0")
    samples = ds.get("SamplesPerPixel")
    if samples != 1:
        raise _Invalid(f"SamplesPerPixel is {samples}, expected 1 (grayscale)")
    photometric = ds.get("PhotometricInterpretation")
    if photometric not in _MONOCHROME:
        raise _Invalid(f"PhotometricInterpretation is {photometric!r}, expected MONOCHROME1/2")
    frames = ds.get("NumberOfFrames")
    if not _is_empty(frames):
        try:
            n_frames = int(frames)
        except (TypeError, ValueError):
            raise _Invalid(f"NumberOfFrames is {frames!r}, expected an integer") from None
        if n_frames > 1:
            raise _Invalid(f"NumberOfFrames is {n_frames}, expected a single frame")
    if tsyntax in DECODING_PLUGINS:
        decoding_plugin(ds, tsyntax)  # a missing decoder is a header-time refusal
    return tsyntax


def decoding_plugin(ds: Dataset, tsyntax: str) -> str:
    """The pydicom plugin that decodes `ds` (compressed syntax `tsyntax`): the first installed
    one of DECODING_PLUGINS (TWELVE_BIT_JPEG_PLUGINS for JPEG Extended beyond 8 bits)."""
    wanted = DECODING_PLUGINS[tsyntax]
    if tsyntax == JPEGExtended12Bit and int(ds.get("BitsStored") or 8) > 8:
        wanted = TWELVE_BIT_JPEG_PLUGINS
    installed = get_decoder(tsyntax).available_plugins
    for name in wanted:
        if name in installed:
            return name
    packages = [
        _PYLIBJPEG_PACKAGES.get(tsyntax, "pylibjpeg-openjpeg")
        if name == "pylibjpeg"
        else _PACKAGES[name]
        for name in wanted
    ]
    raise _Invalid(
        f"no decoder installed for {UID(tsyntax).name} ({tsyntax}, {ds.get('BitsStored')}-bit): "
        f"install one of {', '.join(packages)}"
    )


def _to_unit_range(stored: np.ndarray, ds: Dataset, intensity: str) -> np.ndarray:
    """Apply modality and VOI steps to stored values [H, W]; return float32 [H, W] in [0, 1]."""
    bits = int(ds.BitsStored)
    if intensity == "auto":
        intensity = "bit-range" if bits <= 8 else "percentile"
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = _finite_float(ds, "RescaleSlope", 1.0)
    intercept = _finite_float(ds, "RescaleIntercept", 0.0)
    window = _window(ds)
    has_voi_lut = bool(ds.get("VOILUTSequence"))

    percentile_source = stored  # the percentiles of stored values = those of `values` below
    if ds.get("ModalityLUTSequence"):
        table = _lut_table(apply_modality_lut, ds, "ModalityLUTSequence")
        values = _lookup(stored, table, _first_mapped(ds, "ModalityLUTSequence"))
        lo, hi, flip = float(table.min()), float(table.max()), False
        percentile_source = values
    else:
        values = stored.astype(np.float32)  # the one full-size copy; everything after is in place
        flip = slope < 0
        if (window is not None or has_voi_lut) and (slope != 1.0 or intercept != 0.0):
            values *= np.float32(slope)
            values += np.float32(intercept)

    if has_voi_lut:
        table = _lut_table(apply_voi, ds, "VOILUTSequence")
        t_lo, t_hi = float(table.min()), float(table.max())
        if t_hi <= t_lo:
            raise _Invalid("VOI LUT Sequence table is constant")
        unit = (table.astype(np.float32) - np.float32(t_lo)) / np.float32(t_hi - t_lo)
        out = _lookup(values, unit, _first_mapped(ds, "VOILUTSequence"))
    elif window is not None:
        out = _apply_window(values, *window)
    else:
        if intensity == "percentile":
            lo, hi = _percentiles(percentile_source)
            if hi <= lo:  # a constant image
                lo, hi = lo, lo + 1.0
        if hi <= lo:
            raise _Invalid(f"pixel value range [{lo}, {hi}] is empty")
        out = values
        if lo != 0:
            out -= np.float32(lo)
        out /= np.float32(hi - lo)
        if flip:
            np.subtract(np.float32(1.0), out, out=out)
    np.clip(out, 0.0, 1.0, out=out)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        np.subtract(np.float32(1.0), out, out=out)
    return out


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    """np.percentile(values, PERCENTILES) ('linear'); for integers spanning < 2**20 values it
    reads the order statistics off a histogram (4x faster on a 1024 x 1024 12-bit image)."""
    if values.dtype.kind in "iu" and values.size:
        low = int(values.min())
        span = int(values.max()) - low
        if span < 2**20:
            offsets = values.ravel().astype(np.int64) - low if low else values.ravel()
            cumulative = np.cumsum(np.bincount(offsets, minlength=span + 1))
            out = []
            for q in PERCENTILES:
                position = (values.size - 1) * q / 100
                k = math.floor(position)
                below = int(np.searchsorted(cumulative, k, side="right"))
                above = int(np.searchsorted(cumulative, min(k + 1, values.size - 1), side="right"))
                out.append(low + below + (position - k) * (above - below))
            return out[0], out[1]
    lo, hi = np.percentile(values, PERCENTILES)
    return float(lo), float(hi)


def _finite_float(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    if _is_empty(value):
        return default
    number = float(value)
    if not math.isfinite(number):
        raise _Invalid(f"{keyword} is {value}, expected a finite number")
    if keyword == "RescaleSlope" and number == 0.0:
        raise _Invalid("RescaleSlope is 0, every pixel would have the same value")
    return number


def _window(ds: Dataset) -> tuple[float, float, str] | None:
    """Return (center, width, function) of the first window, or None when there is none."""
    centers, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    if _is_empty(centers) or _is_empty(widths):
        return None
    center = float(centers[0] if isinstance(centers, MultiValue) else centers)
    width = float(widths[0] if isinstance(widths, MultiValue) else widths)
    if not (math.isfinite(center) and math.isfinite(width)):
        raise _Invalid(f"WindowCenter {center} / WindowWidth {width} must be finite")
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    return center, width, function


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Map float32 `values` [H, W] through a DICOM window onto [0, 1] (before clipping)."""
    if function == "SIGMOID":
        if width <= 0:
            raise _Invalid(f"WindowWidth is {width}, expected > 0 for SIGMOID")
        values -= np.float32(center)
        values *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):
            np.exp(values, out=values)
        values += np.float32(1.0)
        return np.reciprocal(values, out=values)
    if function == "LINEAR":
        if width < 1:
            raise _Invalid(f"WindowWidth is {width}, expected >= 1 for LINEAR")
        if width == 1:  # a step at center - 0.5
            return np.greater(values, np.float32(center - 0.5)).astype(np.float32)
        lo, span = center - 0.5 - (width - 1) / 2, width - 1
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise _Invalid(f"WindowWidth is {width}, expected > 0 for LINEAR_EXACT")
        lo, span = center - width / 2, width
    else:
        raise _Invalid(f"VOILUTFunction {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID")
    values -= np.float32(lo)
    values /= np.float32(span)
    return values


def _is_empty(value: object) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def _first_mapped(ds: Dataset, sequence: str) -> int:
    return int(ds[sequence][0].LUTDescriptor[1])


def _lut_table(
    apply: Callable[[np.ndarray, Dataset], np.ndarray], ds: Dataset, sequence: str
) -> np.ndarray:
    """Return the LUT of `ds.<sequence>[0]` as an array [n_entries] (decoded by pydicom)."""
    descriptor = ds[sequence][0].LUTDescriptor
    n_entries = int(descriptor[0]) or 2**16
    first = int(descriptor[1])
    return np.asarray(apply(np.arange(first, first + n_entries, dtype=np.int64), ds))


def _lookup(values: np.ndarray, table: np.ndarray, first: int) -> np.ndarray:
    """Return table[floor(values) - first] as float32 [H, W], outside inputs clamped to it."""
    if values.dtype.kind == "f":
        values = np.floor(values)
    index = np.clip(values.astype(np.int64) - first, 0, len(table) - 1)
    return table.astype(np.float32)[index]
