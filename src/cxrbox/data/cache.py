"""Decode once: a memory-mapped uint8 image cache [N, S, S] with a JSON sidecar.

`build_cache` turns each DICOM into the model's uint8 S x S image with
`cxrbox.data.preprocess.load_model_image` (the one DICOM-to-input path) and stores it in a `.npy`
file (np.lib.format.open_memmap). The sidecar `<name>.json` records the format version, S, the
intensity rule (`cxrbox.data.dicom`; a cache opened for another rule is refused), the source folder,
the patient ids in row order and each image's original (H, W), which boxes in original pixels
need. Both files are written through `cxrbox.atomic_write` (a temporary name, renamed when
complete), the array first, after removing any older sidecar, and the sidecar last, so an
interrupted build never leaves a cache that opens.

Where the trainer keeps a folder's cache (`cache_location`): beside the image folder by default
(`default_cache_path`), in a chosen `cache_dir` (`cxrbox train/cache --cache-dir`) under a name
unique to the image folder, and in `fallback_cache_dir()` with a warning when the default place
cannot be written (a read-only data set, e.g. a mounted archive).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cxrbox.atomic_write import atomic_path
from cxrbox.errors import DataError, InputValueError, listed
from cxrbox.options import DEFAULT_INTENSITY

log = logging.getLogger("cxrbox.data.cache")

FORMAT_VERSION = 1


def default_cache_path(images_dir: str | Path, size: int) -> Path:
    """The cache the trainer builds for `images_dir` at `size` px: beside the folder."""
    return Path(images_dir).parent / f".cxrbox-cache-{size}.npy"


def fallback_cache_dir() -> Path:
    """Where caches go when the default place cannot be written: ~/.cache/cxrbox/image-cache."""
    return Path.home() / ".cache" / "cxrbox" / "image-cache"


def cache_path_in(cache_dir: str | Path, images_dir: str | Path, size: int) -> Path:
    """The cache of `images_dir` at `size` px inside `cache_dir`: named after the folder and a
    hash of its absolute path, so the caches of several image folders can share `cache_dir`."""
    folder = Path(images_dir).resolve()
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"{folder.name}-{digest}-{size}px.npy"


def is_writable_folder(folder: Path) -> bool:
    """Whether a file can be created in `folder` (tried, so a read-only mount reads as such
    even for root, where permission bits do not)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def cache_location(images_dir: str | Path, size: int, cache_dir: str | Path | None = None) -> Path:
    """Where `cxrbox train` keeps, and `cxrbox cache` writes, the cache of `images_dir` at
    `size` px: in `cache_dir` when given (`cache_path_in`); else beside the folder
    (`default_cache_path`), unless no cache is there and none can be written there (a
    read-only data folder): then in `fallback_cache_dir()`, with a warning naming both."""
    if cache_dir is not None:
        return cache_path_in(cache_dir, images_dir, size)
    path = default_cache_path(images_dir, size)
    if path.exists() or not path.parent.is_dir() or is_writable_folder(path.parent):
        return path
    fallback = cache_path_in(fallback_cache_dir(), images_dir, size)
    log.warning(
        "cannot write the image cache beside %s (%s is not writable); using %s instead "
        "(choose the place with --cache-dir, config field cache_dir)",
        images_dir, path.parent, fallback,
    )  # fmt: skip
    return fallback


def sidecar_path(cache_path: str | Path) -> Path:
    """`foo.npy` -> `foo.json`."""
    return Path(cache_path).with_suffix(".json")


def decode_resized(
    path: str | Path, size: int, intensity: str = DEFAULT_INTENSITY
) -> tuple[np.ndarray, tuple[int, int]]:
    """Load one DICOM and return (uint8 [size, size], original (H, W)): `load_model_image`."""
    from cxrbox.data.preprocess import load_model_image

    return load_model_image(path, size, intensity=intensity)


def _decode_job(job: tuple[str, int, str]) -> tuple[np.ndarray, tuple[int, int]]:
    import cv2

    cv2.setNumThreads(1)
    return decode_resized(*job)


def build_cache(
    images_dir: str | Path,
    patient_ids: Iterable[str],
    size: int,
    out_path: str | Path,
    workers: int = 1,
    progress: bool = False,
    intensity: str = DEFAULT_INTENSITY,
) -> Path:
    """Decode `patient_ids` from `images_dir` into a uint8 cache at `out_path` (.npy).

    Args:
        images_dir: folder of `<patientId>.dcm` files.
        patient_ids: the rows, in order (duplicates are stored once).
        size: side S of the square cached images.
        out_path: the `.npy` file; the sidecar goes beside it (`sidecar_path`).
        workers: decoding processes (1: in this process).
        progress: show a tqdm bar on stderr.
        intensity: `load_pixels`' rule for files without a window, recorded in the sidecar.

    Returns the `.npy` path. Raises DataError when DICOMs are missing (all are listed up front),
    DicomError when one cannot be decoded.
    """
    from cxrbox.data.dicom import find_dicom_files

    if size < 8:
        raise InputValueError(f"build_cache: size must be >= 8 px, got {size}")
    if workers < 1:
        raise InputValueError(f"build_cache: workers must be >= 1, got {workers}")
    out_path = Path(out_path)
    if out_path.suffix != ".npy":
        raise InputValueError(f"build_cache: out_path must end in .npy, got {out_path}")
    images_dir = Path(images_dir)
    ids = list(dict.fromkeys(patient_ids))
    if not ids:
        raise DataError(f"build_cache: no patient ids to cache from {images_dir}")
    files = find_dicom_files(images_dir)
    missing = [pid for pid in ids if pid not in files]
    if missing:
        raise DataError(
            f"{images_dir}: {len(missing)} of {len(ids)} patients have no <patientId>.dcm file: "
            f"{listed(missing)}"
        )
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        writable = is_writable_folder(out_path.parent)
    except OSError:
        writable = False
    if not writable:
        raise DataError(
            f"cannot write the image cache {out_path}: its folder cannot be created or written; "
            "choose a writable folder (cxrbox train/cache --cache-dir DIR)"
        )
    jobs = [(str(files[pid]), size, intensity) for pid in ids]
    orig_sizes: list[tuple[int, int]] = []
    sidecar = sidecar_path(out_path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ids), desc=f"caching {size} px", unit="img")
    try:
        with atomic_path(out_path, suffix=".npy") as tmp_npy:
            array = np.lib.format.open_memmap(
                tmp_npy, mode="w+", dtype=np.uint8, shape=(len(ids), size, size)
            )
            if workers == 1:
                results: Iterable[tuple[np.ndarray, tuple[int, int]]] = map(_decode_job, jobs)
                pool = None
            else:
                pool = ProcessPoolExecutor(max_workers=workers)
                results = pool.map(_decode_job, jobs, chunksize=8)
            try:
                for row, (image, orig) in enumerate(results):
                    array[row] = image
                    orig_sizes.append(orig)
                    if bar is not None:
                        bar.update(1)
            finally:
                if pool is not None:
                    pool.shutdown(cancel_futures=True)
            array.flush()
            del array
            sidecar.unlink(missing_ok=True)  # an older sidecar must never describe this array
    finally:
        if bar is not None:
            bar.close()
    meta = {
        "format_version": FORMAT_VERSION,
        "size": size,
        "intensity": intensity,
        "source": str(images_dir.resolve()),
        "patient_ids": ids,
        "orig_sizes": [list(hw) for hw in orig_sizes],
    }
    with atomic_path(sidecar, suffix=".json") as tmp_json:
        tmp_json.write_text(json.dumps(meta))
    return out_path


class ImageCache:
    """A read-only view of a cache written by `build_cache`.

    The memory map is opened lazily in each process and never pickled, so a Dataset holding
    an ImageCache can go to DataLoader workers cheaply.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.size: int = int(meta["size"])
        self.intensity: str | None = meta.get("intensity")
        self.source: str = str(meta.get("source", ""))
        self.patient_ids: list[str] = list(meta["patient_ids"])
        self._row = {pid: i for i, pid in enumerate(self.patient_ids)}
        self._orig = [(int(h), int(w)) for h, w in meta["orig_sizes"]]
        self._array: np.ndarray | None = None

    @classmethod
    def open(
        cls, path: str | Path, size: int | None = None, intensity: str | None = None
    ) -> ImageCache:
        """Open and validate a cache; `size` and `intensity` (when given) must match its own.

        Raises DataError naming the file when either file is missing or unreadable, the format
        version or size differ, or the array does not match its sidecar.
        """
        path = Path(path)
        sidecar = sidecar_path(path)
        rebuild = "; delete it and rebuild with `cxrbox cache`"
        if not path.is_file() or not sidecar.is_file():
            raise DataError(f"image cache {path}: missing {path.name} or {sidecar.name}{rebuild}")
        try:
            meta = json.loads(sidecar.read_text())
            version = meta["format_version"]
            cached_size = int(meta["size"])
            n = len(meta["patient_ids"])
            n_sizes = len(meta["orig_sizes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"image cache {sidecar}: unreadable sidecar ({exc}){rebuild}") from exc
        if version != FORMAT_VERSION:
            raise DataError(
                f"image cache {path}: format version {version}, this cxrbox reads "
                f"{FORMAT_VERSION}{rebuild}"
            )
        if size is not None and cached_size != size:
            raise DataError(
                f"image cache {path}: holds {cached_size} px images, {size} px requested{rebuild}"
            )
        if intensity is not None and meta.get("intensity") != intensity:
            raise DataError(
                f"image cache {path}: built with intensity rule {meta.get('intensity')!r}, "
                f"{intensity!r} requested{rebuild}"
            )
        try:
            array = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"image cache {path}: unreadable array ({exc}){rebuild}") from exc
        expected = (n, cached_size, cached_size)
        if array.dtype != np.uint8 or array.shape != expected or n_sizes != n:
            raise DataError(
                f"image cache {path}: array is {array.dtype} {array.shape}, sidecar says uint8 "
                f"{expected} with {n_sizes} original sizes{rebuild}"
            )
        cache = cls(path, meta)
        cache._array = array
        return cache

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __contains__(self, patient_id: object) -> bool:
        return patient_id in self._row

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # reopened lazily: never pickle the mapped images
        return state

    def _row_of(self, patient_id: str) -> int:
        try:
            return self._row[patient_id]
        except KeyError:
            raise DataError(
                f"image cache {self.path}: no image for patient {patient_id!r}; the cache is "
                f"stale for these labels, rebuild it with `cxrbox cache`"
            ) from None

    def get(self, patient_id: str) -> np.ndarray:
        """uint8 [S, S] image of `patient_id` (a read-only view of the memory map)."""
        row = self._row_of(patient_id)
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return np.asarray(self._array[row])

    def orig_size(self, patient_id: str) -> tuple[int, int]:
        """(H, W) of the original DICOM."""
        return self._orig[self._row_of(patient_id)]

    def require(self, patient_ids: Iterable[str]) -> None:
        """Raise DataError listing the ids this cache lacks (count and first few)."""
        ids = list(patient_ids)
        missing = [pid for pid in ids if pid not in self._row]
        if missing:
            raise DataError(
                f"image cache {self.path} is stale: {len(missing)} of {len(ids)} patients are "
                f"not in it: {listed(missing)}; rebuild it with `cxrbox cache`"
            )
