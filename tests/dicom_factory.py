"""Build small DICOM files inside tests with pydicom (no fixtures on disk).

`make_dicom(path, pixels, ...)` writes a file and returns its path; `make_dataset(pixels, ...)`
returns the dataset so a test can break it (delete Rows, change a UID ...) before
`write_dataset(path, ds)` saves it. Pixels are always a 2-D array of stored values [H, W];
`frames` and `samples_per_pixel` repeat it to build multi-frame or colour files.

Example::

    path = make_dicom(tmp_path / "p1.dcm", np.arange(16, dtype=np.uint8).reshape(4, 4))
    path = make_dicom(tmp_path / "ct.dcm", pixels, bits_stored=12, rescale=(1.0, -1024.0),
                      window=(40.0, 400.0))
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

TransferSyntax = Literal["explicit", "implicit", "big_endian", "deflated", "jpeg_baseline"]

TRANSFER_SYNTAX_UIDS: dict[str, str] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "big_endian": ExplicitVRBigEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "jpeg_baseline": JPEGBaseline8Bit,
}


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Return the (min, max) stored value for `bits_stored` bits, two's complement if signed."""
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def make_dataset(
    pixels: np.ndarray,
    *,
    bits_stored: int = 8,
    signed: bool = False,
    photometric: str | None = None,
    transfer_syntax: TransferSyntax = "explicit",
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_lut_function: str | None = None,
    voi_lut: tuple[int, Sequence[int]] | None = None,
    modality_lut: tuple[int, Sequence[int]] | None = None,
    frames: int = 1,
    samples_per_pixel: int = 1,
    jpeg_quality: int = 95,
) -> Dataset:
    """Return a DICOM dataset (with file meta) holding `pixels`.

    Args:
        pixels: stored values [H, W]; integers inside the `bits_stored` range.
        bits_stored: 1-32; BitsAllocated is 8, 16 or 32, the smallest that holds it.
        signed: PixelRepresentation 1 (two's complement).
        photometric: default MONOCHROME2 (one sample), RGB (native colour) or YBR_FULL_422
            (JPEG colour, what Pillow writes).
        transfer_syntax: explicit/implicit VR little endian, explicit VR big endian, deflated
            explicit VR little endian, or JPEG Baseline 8-bit (lossy, Pillow, `jpeg_quality`).
        rescale: (RescaleSlope, RescaleIntercept).
        window: (WindowCenter, WindowWidth); `voi_lut_function` sets VOILUTFunction.
        voi_lut / modality_lut: (first value mapped, table of 16-bit entries) for a one-item
            VOI LUT Sequence / Modality LUT Sequence.
        frames: NumberOfFrames (the image repeated); written only when > 1.
        samples_per_pixel: SamplesPerPixel (the image repeated per sample).
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"pixels must be [H, W], got shape {pixels.shape}")
    lo, hi = stored_range(bits_stored, signed)
    if pixels.size and (pixels.min() < lo or pixels.max() > hi):
        raise ValueError(f"pixels must lie in [{lo}, {hi}] for {bits_stored} bits stored")
    bits_allocated = 8 if bits_stored <= 8 else 16 if bits_stored <= 16 else 32
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    is_jpeg = transfer_syntax == "jpeg_baseline"
    if is_jpeg and (bits_stored != 8 or signed):
        raise ValueError("JPEG Baseline holds 8-bit unsigned pixels only")
    if photometric is None:
        photometric = (
            "MONOCHROME2" if samples_per_pixel == 1 else "YBR_FULL_422" if is_jpeg else "RGB"
        )

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = TRANSFER_SYNTAX_UIDS[transfer_syntax]
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = "test"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = samples_per_pixel
    if samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut_function is not None:
        ds.VOILUTFunction = voi_lut_function
    if voi_lut is not None:
        ds.VOILUTSequence = [_lut_item(*voi_lut)]
    if modality_lut is not None:
        ds.ModalityLUTSequence = [_lut_item(*modality_lut)]

    frame = pixels.astype(dtype)
    if samples_per_pixel > 1:
        frame = np.repeat(frame[:, :, None], samples_per_pixel, axis=2)  # [H, W, S]
    if is_jpeg:
        ds.PixelData = encapsulate([_jpeg_bytes(frame, jpeg_quality)] * frames)
        ds["PixelData"].VR = "OB"
    else:
        if transfer_syntax == "big_endian":
            frame = frame.astype(dtype.newbyteorder(">"))
        ds.PixelData = frame.tobytes() * frames
        ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    return ds


def write_dataset(path: str | Path, ds: Dataset) -> Path:
    """Save `ds` as a DICOM file (preamble, file meta, its transfer syntax); return the path."""
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_dicom(path: str | Path, pixels: np.ndarray, **options: Any) -> Path:
    """Write `make_dataset(pixels, **options)` to `path` (PatientID = file stem); return the path.

    `options` are make_dataset's keywords; an unknown one raises TypeError there.
    """
    ds = make_dataset(pixels, **options)
    ds.PatientID = Path(path).stem
    return write_dataset(path, ds)


def _lut_item(first_mapped: int, table: Sequence[int]) -> Dataset:
    item = Dataset()
    values = [int(v) for v in table]
    item.LUTDescriptor = [len(values) % 2**16, first_mapped, 16]
    item["LUTDescriptor"].VR = "SS" if first_mapped < 0 else "US"
    item.LUTData = values
    item["LUTData"].VR = "US"
    return item


def _jpeg_bytes(frame: np.ndarray, quality: int) -> bytes:
    """Encode one frame [H, W] (grayscale) or [H, W, 3] with Pillow as baseline JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_random_dicoms(folder: Path, shapes: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    """One uniform-noise 8-bit DICOM `<patientId>.dcm` per entry of `shapes` (rows, cols)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for pid, shape in shapes.items():
        make_dicom(folder / f"{pid}.dcm", rng.integers(0, 256, shape, dtype=np.uint8))
    return folder


# Compressed syntaxes `compress_dicom` can write: pydicom's encoders (RLE, JPEG-LS with pyjpegls,
# JPEG 2000 with pylibjpeg-openjpeg), and gdcm for JPEG Lossless (pydicom has no encoder).
GDCM_ENCODED = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")


def compress_dicom(source: str | Path, target: str | Path, uid: str, **encode: Any) -> Path:
    """Write the (uncompressed) DICOM `source` to `target` in compressed syntax `uid`.

    `encode`: pydicom's encoding options (`jls_error=2` near-lossless, `j2k_cr=[20]` lossy).
    """
    import pydicom

    target = Path(target)
    if uid in GDCM_ENCODED:
        import gdcm

        reader = gdcm.ImageReader()
        reader.SetFileName(str(source))
        if not reader.Read():
            raise ValueError(f"gdcm cannot read {source}")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(uid)))
        change.SetInput(reader.GetImage())
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(target))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput() if change.Change() else None)
        if not writer.Write():
            raise ValueError(f"gdcm cannot write {uid} to {target}")
        return target
    ds = pydicom.dcmread(source)
    ds.compress(uid, **encode)
    return write_dataset(target, ds)
