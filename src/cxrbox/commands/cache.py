"""`cxrbox cache`: decode a folder of DICOMs once into a memory-mapped uint8 image cache."""

from __future__ import annotations

import argparse

from cxrbox.commands.arguments import integer
from cxrbox.options import DEFAULT_INTENSITY, INTENSITY_RULES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="decode DICOMs once into a uint8 image cache (.npy + .json)",
        description="Decode every <patientId>.dcm of --images (or only the patients of "
        "--labels), resize to --size x --size and store them in a memory-mapped .npy file "
        "with a JSON sidecar. Without --out it goes where `cxrbox train` (with the same "
        "--cache-dir) looks for it, so training starts without decoding; train also builds "
        "it by itself when missing.",
    )
    parser.add_argument("--images", required=True, help="folder of <patientId>.dcm files")
    parser.add_argument("--size", type=integer(8), required=True,
                        help="side of the cached images, px")  # fmt: skip
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out", help="cache file to write (.npy); default: where `cxrbox train` looks for it"
    )
    where.add_argument(
        "--cache-dir",
        dest="cache_dir",
        metavar="DIR",
        help="folder of the caches, as `cxrbox train --cache-dir` (default: beside the image "
        "folder, or ~/.cache/cxrbox/image-cache where that folder is read-only)",
    )
    parser.add_argument("--labels", help="RSNA label CSV: cache only its patients, in its order")
    parser.add_argument("--workers", type=integer(1), default=1, help="decoding processes")
    parser.add_argument(
        "--intensity",
        choices=INTENSITY_RULES,
        default=DEFAULT_INTENSITY,
        help="rule for DICOMs without a window (the config field `intensity`)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from cxrbox.data.cache import ImageCache, build_cache, cache_location
    from cxrbox.data.dicom import find_dicom_files
    from cxrbox.errors import ConfigError, DataError

    if args.out and not args.out.endswith(".npy"):
        raise ConfigError(f"--out {args.out}: expected a cache file name ending in .npy")

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the fallback's warning

    if args.labels:
        from cxrbox.data.labels import read_rsna_labels

        patient_ids = list(read_rsna_labels(args.labels))
    else:
        patient_ids = list(find_dicom_files(args.images))
        if not patient_ids:
            raise DataError(
                f"--images {args.images}: no *.dcm files in this folder (expected "
                "<patientId>.dcm images to cache)"
            )
    path = build_cache(
        args.images,
        patient_ids,
        args.size,
        args.out or cache_location(args.images, args.size, args.cache_dir),
        workers=args.workers,
        progress=not args.quiet,
        intensity=args.intensity,
    )
    cache = ImageCache.open(path, size=args.size, intensity=args.intensity)
    print(f"wrote {path} ({len(cache)} images, {cache.size} px), intensity rule {cache.intensity}")
    return 0
