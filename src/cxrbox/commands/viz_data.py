"""`cxrbox viz-data`: a contact sheet of augmented training samples with their boxes."""

from __future__ import annotations

import argparse

from cxrbox.commands.arguments import integer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "viz-data",
        help="draw augmented training samples with their boxes (check alignment by eye)",
        description="Run --n labelled patients (positives first, drawn with --seed) through "
        "the training data path and draw each image with its boxes de-normalized to pixels. "
        "Also counts label boxes with a negative width/height or outside their image, and "
        "boxes dropped by the augmentation.",
    )
    parser.add_argument("--images", required=True, help="folder of <patientId>.dcm files")
    parser.add_argument("--labels", required=True, help="RSNA label CSV")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--n", type=integer(1), default=16, help="samples to draw")
    parser.add_argument("--size", type=integer(8), default=512, help="training image size, px")
    parser.add_argument("--seed", type=integer(0), default=0,
                        help="picks patients and augmentation")  # fmt: skip
    parser.add_argument("--epoch", type=integer(0), default=0, help="augmentation epoch")
    parser.add_argument(
        "--no-augment", dest="augment", action="store_false", help="resize only (eval path)"
    )
    parser.set_defaults(func=run)


def pick_patients(labels: dict, n: int, seed: int) -> list[str]:
    """Up to `n` patients drawn with `seed`: positives (with boxes) first, then negatives."""
    import numpy as np

    rng = np.random.default_rng(seed)
    positive = [pid for pid, boxes in labels.items() if len(boxes)]
    negative = [pid for pid, boxes in labels.items() if not len(boxes)]
    chosen = [positive[i] for i in rng.permutation(len(positive))[:n]]
    chosen += [negative[i] for i in rng.permutation(len(negative))[: n - len(chosen)]]
    return chosen


def run(args: argparse.Namespace) -> int:
    import logging

    from cxrbox.data.augment import build_transforms
    from cxrbox.data.dataset import RSNADataset, count_label_problems
    from cxrbox.data.dataviz import draw_contact_sheet
    from cxrbox.data.dicom import find_dicom_files, read_image_size
    from cxrbox.data.labels import read_rsna_labels
    from cxrbox.errors import DataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    labels = read_rsna_labels(args.labels)
    if not labels:
        raise DataError(f"{args.labels}: no labelled patients")
    files = find_dicom_files(args.images)
    sizes = {
        pid: read_image_size(files[pid])
        for pid, boxes in labels.items()
        if len(boxes) and pid in files
    }
    problems = count_label_problems(labels, sizes)
    chosen = pick_patients(labels, args.n, args.seed)
    dataset = RSNADataset(
        args.images,
        {pid: labels[pid] for pid in chosen},
        build_transforms(train=args.augment, size=args.size),
        seed=args.seed,
    )
    dataset.set_epoch(args.epoch)
    samples = [dataset[i] for i in range(len(dataset))]
    n_dropped = sum(s.n_dropped for s in samples)
    n_drawn = sum(len(s.boxes) for s in samples)
    mode = "augmented" if args.augment else "resize only"
    title = f"{len(samples)} samples, {args.size} px, {mode}, seed {args.seed}, epoch {args.epoch}"
    path = draw_contact_sheet(samples, args.out, title=title)
    print(
        f"labels: {len(labels)} patients, {problems.n_boxes} boxes; "
        f"negative width {problems.negative_width}, negative height {problems.negative_height}, "
        f"out of bounds {problems.out_of_bounds}, no image to check {problems.unsized}"
    )
    print(f"sheet: {len(samples)} samples, {n_drawn} boxes drawn, {n_dropped} boxes dropped")
    print(f"wrote {path}")
    return 0
