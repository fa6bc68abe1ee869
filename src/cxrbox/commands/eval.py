"""`cxrbox eval`: mean IoU, corner MAE, RSNA mAP and COCO mAP of a .pt or .onnx on labelled data."""

from __future__ import annotations

import argparse

from cxrbox.commands.arguments import add_on_error_arguments, device, number, require_device


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint or an exported .onnx model on RSNA-format data",
        description="Print mean IoU, corner MAE (original pixels), RSNA mAP, COCO mAP@0.5 and "
        "mAP@[.5:.95] and the spread of the top prediction (near 0 means collapse) of a "
        "checkpoint or an .onnx model on labelled data.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="a checkpoint (best.pt) or an exported .onnx model")
    model.add_argument("--checkpoint", dest="model", help="same as --model")
    parser.add_argument("--images", required=True, help="folder of <patientId>.dcm files")
    parser.add_argument("--labels", required=True, help="RSNA label CSV")
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--score-threshold", dest="score_threshold", type=number(0.0, 1.0),
                        help="RSNA mAP of the boxes scoring at least this (default: the "
                        "model's, tuned on validation)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_on_error_arguments(parser, "cxrbox-eval-skipped.csv")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from cxrbox.data.dicom import find_dicom_files
    from cxrbox.data.labels import read_rsna_labels
    from cxrbox.data.unreadable import SKIPPED_EXIT_CODE, find_unreadable, write_skipped
    from cxrbox.deploy.inference import describe_score_threshold, load_inference_model
    from cxrbox.evaluation.evaluate import evaluate, flat_metrics, folder_loader

    require_device(args.device)
    model, config, coding = load_inference_model(args.model, args.device)
    threshold_note = describe_score_threshold(
        args.model, config.score_threshold, args.score_threshold, model
    )
    if args.score_threshold is not None:
        config = config.replace(score_threshold=args.score_threshold)
    labels = read_rsna_labels(args.labels)
    skipped = []
    if args.on_error == "skip":
        files = find_dicom_files(args.images)
        skipped = find_unreadable({p: files[p] for p in labels if p in files}, config.intensity)
        skipped_ids = {s.patient_id for s in skipped}
        labels = {pid: boxes for pid, boxes in labels.items() if pid not in skipped_ids}
    loader = folder_loader(args.images, labels, config)
    result = evaluate(model, loader, coding, config, args.device, progress="eval")
    sidecar = write_skipped(args.skipped or "cxrbox-eval-skipped.csv", skipped) if skipped else None
    code = SKIPPED_EXIT_CODE if skipped else 0
    metrics = flat_metrics(result)
    if args.json:
        std = {k: metrics.pop(f"std_{k}") for k in ("cx", "cy", "w", "h")}
        report = {**metrics, "n_positive": result.n_positive, "prediction_std": std}
        report.update(score_threshold=config.score_threshold, score_threshold_note=threshold_note)
        report.update(n_skipped=len(skipped), skipped_file=str(sidecar) if sidecar else None)
        print(json.dumps(report))
        return code
    print(f"images {result.n_images} ({result.n_positive} positive)")
    print(f"mean IoU   {result.mean_iou:.4f}")
    print(f"corner MAE {result.mae_px:.2f} px (original pixels; {result.n_missed} boxes missed)")
    print(f"RSNA mAP   {result.rsna_map:.4f} ({threshold_note})")
    print(
        f"COCO mAP   @0.5 {result.coco_map_50:.4f}, @[.5:.95] {result.coco_map_50_95:.4f} "
        "(every detection ranked by score; pycocotools)"
    )
    spread = ", ".join(f"{k} {v:.4f}" for k, v in result.prediction_std.items())
    print(f"top-box spread (std, normalized): {spread}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s), listed in {sidecar}")
    return code
