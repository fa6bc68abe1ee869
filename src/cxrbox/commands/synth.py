"""`cxrbox synth`: write a synthetic RSNA-like data set (DICOMs + stage_2_train_labels.csv), or
with `--layout kaggle` a stand-in for the whole Kaggle archive (test images, sample submission)."""

from __future__ import annotations

import argparse

from cxrbox.commands.arguments import integer, number

_PROGRESS_FROM = 50  # show a progress bar (stderr) from this many images on
# cxrbox.data.synthetic.anatomy.MIN_IMAGE_SIZE, not imported here: it would load OpenCV for
# `cxrbox --help` (tests/unit/test_cli_help.py checks they agree).
MIN_SYNTH_SIZE = 64
LAYOUTS = ("train", "kaggle")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic RSNA-like data set (DICOM + labels CSV)",
        description="Write OUT/stage_2_train_images/<patientId>.dcm and "
        "OUT/stage_2_train_labels.csv: procedural chest radiographs with pneumonia-like "
        "opacities, in the Kaggle RSNA layout. With --layout kaggle, also "
        "OUT/stage_2_test_images/, OUT/stage_2_detailed_class_info.csv and "
        "OUT/stage_2_sample_submission.csv, as the real archive has them. The same --seed "
        "gives the same bytes.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=integer(1), required=True,
                        help="number of (training) images")  # fmt: skip
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="train",
        help="train: the training images and labels only; kaggle: the whole archive",
    )
    parser.add_argument(
        "--n-test",
        dest="n_test",
        type=integer(1),
        help="unlabelled test images of --layout kaggle (default: N / 9, at least 1, the "
        "real archive's ratio)",
    )
    parser.add_argument("--seed", type=integer(0), default=0,
                        help="seed of the whole data set: same seed, same bytes")  # fmt: skip
    parser.add_argument("--size", type=integer(MIN_SYNTH_SIZE), default=1024,
                        help="image side in pixels")  # fmt: skip
    parser.add_argument(
        "--jpeg", action="store_true", help="JPEG Baseline pixel data (as RSNA) not uncompressed"
    )
    parser.add_argument("--jpeg-quality", dest="jpeg_quality", type=integer(1, 100), default=95,
                        help="JPEG quality with --jpeg")  # fmt: skip
    parser.add_argument(
        "--positive-fraction",
        dest="positive_fraction",
        type=number(0.0, 1.0),
        default=1 / 3,
        help="fraction of images with opacities (default 1/3)",
    )
    parser.add_argument("--workers", type=integer(1), default=1, help="processes")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace another data set found in --out"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cxrbox.errors import ConfigError

    if args.n_test is not None and args.layout != "kaggle":
        raise ConfigError("--n-test is for --layout kaggle (the train layout has no test images)")
    common = dict(
        image_size=args.size,
        positive_fraction=args.positive_fraction,
        transfer_syntax="jpeg" if args.jpeg else "explicit",
        jpeg_quality=args.jpeg_quality,
        workers=args.workers,
        progress=not args.quiet and args.n >= _PROGRESS_FROM,
        overwrite=args.overwrite,
    )
    if args.layout == "kaggle":
        from cxrbox.data.synthetic.kaggle_archive import write_kaggle_archive

        n_test = max(1, args.n // 9) if args.n_test is None else args.n_test
        print(write_kaggle_archive(args.out, args.n, n_test, args.seed, **common).line())
        return 0
    from cxrbox.data.synthetic.rsna_like import write_rsna_like

    summary = write_rsna_like(args.out, args.n, args.seed, **common)
    print(summary.line())
    return 0
