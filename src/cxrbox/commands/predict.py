"""`cxrbox predict`: an RSNA submission CSV (patientId,PredictionString) for a folder of DICOMs."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from typing import Any

from cxrbox.commands.arguments import add_on_error_arguments, device, number, require_device


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="write an RSNA submission CSV for a folder of DICOMs",
        description="Predict boxes for every <patientId>.dcm in --images and write "
        "patientId,PredictionString with groups of 'conf x y w h' in original pixels.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="a checkpoint (best.pt) or an exported .onnx model")
    model.add_argument("--checkpoint", dest="model", help="same as --model")
    parser.add_argument("--images", required=True, help="folder of <patientId>.dcm files")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--score-threshold", dest="score_threshold", type=number(0.0, 1.0),
                        help="override the checkpoint's score threshold")  # fmt: skip
    parser.add_argument(
        "--sample-submission",
        dest="sample_submission",
        metavar="CSV",
        help="Kaggle's stage_2_sample_submission.csv: write exactly its patients, in its order "
        "(every one needs a DICOM in --images; other DICOMs are not predicted). Default: "
        "every DICOM of --images, sorted by name",
    )
    add_on_error_arguments(parser, "OUT with .skipped.csv")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import csv
    from pathlib import Path

    import numpy as np

    from cxrbox.atomic_write import atomic_path
    from cxrbox.data.dicom import find_dicom_files
    from cxrbox.data.submission import (
        SUBMISSION_HEADER,
        read_sample_submission,
        submission_order,
    )
    from cxrbox.data.unreadable import SKIPPED_EXIT_CODE, find_unreadable, write_skipped
    from cxrbox.deploy.inference import describe_score_threshold, load_inference_model
    from cxrbox.errors import DataError
    from cxrbox.evaluation.evaluate import folder_loader, predict_batches
    from cxrbox.modeling.decode import to_rsna_prediction_string

    require_device(args.device)
    model, config, coding = load_inference_model(args.model, args.device)
    files = find_dicom_files(args.images)
    if not files:
        raise DataError(
            f"--images {args.images}: no *.dcm files in this folder (expected <patientId>.dcm "
            "images to predict); nothing was written"
        )
    if args.sample_submission:
        sample_ids = read_sample_submission(args.sample_submission)
        order = submission_order(sample_ids, files, args.images, args.sample_submission)
        if len(files) > len(order):
            print(f"cxrbox predict: {len(files) - len(order)} DICOM(s) of {args.images} are not "
                  f"in {args.sample_submission}; not predicted")  # fmt: skip
        files = {pid: files[pid] for pid in order}
    threshold = config.score_threshold if args.score_threshold is None else args.score_threshold
    print(
        "cxrbox predict: "
        + describe_score_threshold(args.model, config.score_threshold, args.score_threshold, model)
    )
    skipped = find_unreadable(files, config.intensity) if args.on_error == "skip" else []
    skipped_ids = {s.patient_id for s in skipped}
    unlabelled = {pid: np.zeros((0, 4), np.float32) for pid in files if pid not in skipped_ids}
    loader = folder_loader(args.images, unlabelled, config)
    predictions = predict_batches(
        model, loader, coding, config, args.device, threshold, progress="predict"
    )
    rows: Iterable[tuple[str, Any]] = ((pred.patient_id, pred) for pred in predictions)
    if args.sample_submission:  # a skipped image keeps its row, with no box
        rows = with_empty_rows(rows, list(files), skipped_ids)
    n_images = n_boxes = 0
    # The whole submission or, on any error or Ctrl-C, the previous --out untouched.
    with atomic_path(args.out, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUBMISSION_HEADER)
        for patient_id, pred in rows:
            if pred is None:
                writer.writerow([patient_id, ""])
                continue
            height, width = pred.orig_size
            writer.writerow(
                [pred.patient_id, to_rsna_prediction_string(pred.detections, width, height)]
            )
            n_images += 1
            n_boxes += len(pred.detections.scores)
    print(f"cxrbox predict: {n_images} images, {n_boxes} boxes -> {args.out}")
    if skipped:
        sidecar = write_skipped(args.skipped or Path(args.out).with_suffix(".skipped.csv"), skipped)
        print(f"skipped {len(skipped)} unreadable file(s), listed in {sidecar}")
        return SKIPPED_EXIT_CODE
    return 0


def with_empty_rows(
    rows: Iterable[tuple[str, Any]], order: list[str], skipped: set[str]
) -> Iterator[tuple[str, Any]]:
    """`rows` (patientId, prediction) of the patients of `order` not in `skipped`, in that
    order, with (patientId, None) put in the place of each skipped one."""
    remaining = iter(rows)
    for patient_id in order:
        yield (patient_id, None) if patient_id in skipped else next(remaining)
