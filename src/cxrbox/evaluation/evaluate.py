"""Evaluation and prediction through the one decode (`cxrbox.modeling.decode`).

`predict_batches` runs a model over a loader and yields per-image detections in normalized
xyxy plus what is needed to report them in pixels of the original image; `evaluate` turns
them into mean IoU, corner MAE (px), RSNA mAP, COCO mAP and the spread of the top prediction.
Localisation metrics (mean IoU, MAE, spread) and COCO mAP use every post-NMS detection (score
threshold 0: they measure where the boxes are and how scores rank them, not whether a score
cleared the bar); the RSNA metric uses the detections above `score_threshold`, as a submission
would. With `progress` (a label), both show how many images are done on stderr
(`cxrbox.progress`: a bar on a terminal, a line every 10 s otherwise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import cxrbox.modeling.decode as decoding
from cxrbox.config import TrainConfig
from cxrbox.data.augment import build_transforms
from cxrbox.data.dataset import Batch, RSNADataset, collate_samples
from cxrbox.evaluation.metrics import EvalResult, evaluate_predictions, rsna_map
from cxrbox.modeling.decode import Detections, GridCoding
from cxrbox.progress import track


@dataclass(frozen=True)
class ImagePrediction:
    """One image: detections (normalized xyxy, by score), truth (normalized), original (H, W)."""

    patient_id: str
    detections: Detections
    truth: torch.Tensor
    orig_size: tuple[int, int]


@torch.no_grad()
def predict_batches(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    coding: GridCoding,
    config: TrainConfig,
    device: torch.device,
    score_threshold: float = 0.0,
    progress: str | None = None,
) -> Iterator[ImagePrediction]:
    """Decode + NMS + top-k for every image of `loader` (model put in eval mode).

    `model(images [B, 1, S, S]) -> raw [B, 5, Hg, Wg]`: an nn.Module or an exported model
    (`cxrbox.deploy.onnx_model.OnnxModel`); both go through the same decode. `progress`: a
    label to show the images done under on stderr (None: silent).
    """
    if isinstance(model, nn.Module):
        model.eval()
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    batches: Iterable[Batch] = loader
    if progress is not None:
        total = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
        batches = track(loader, total, progress, "img", size=lambda b: len(b.patient_ids))
    for batch in batches:
        images = batch.images.to(device, memory_format=memory_format)
        raw = model(images).float()
        boxes, scores = decoding.decode_grid(raw, coding)
        detections = decoding.postprocess(
            boxes.cpu(), scores.cpu(), score_threshold, config.nms_iou, config.top_k
        )
        for i, det in enumerate(detections):
            height, width = (int(v) for v in batch.orig_sizes[i])
            yield ImagePrediction(batch.patient_ids[i], det, batch.boxes[i], (height, width))


def evaluate(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    coding: GridCoding,
    config: TrainConfig,
    device: torch.device,
    progress: str | None = None,
) -> EvalResult:
    """Mean IoU, corner MAE in original pixels, RSNA mAP and top-box spread over `loader`."""
    predictions = list(predict_batches(model, loader, coding, config, device, progress=progress))
    return evaluate_image_predictions(predictions, config.score_threshold)


def evaluate_image_predictions(
    predictions: list[ImagePrediction], score_threshold: float
) -> EvalResult:
    """Metrics of per-image predictions: localisation on all detections, RSNA mAP above the bar."""
    preds = [p.detections.boxes for p in predictions]
    scores = [p.detections.scores for p in predictions]
    truths = [p.truth for p in predictions]
    sizes = [(p.orig_size[1], p.orig_size[0]) for p in predictions]  # (width, height)
    result = evaluate_predictions(preds, scores, truths, sizes)
    return dataclasses.replace(result, rsna_map=rsna_map_above(predictions, score_threshold))


def rsna_map_above(predictions: list[ImagePrediction], score_threshold: float) -> float:
    """RSNA mAP of the detections scoring >= `score_threshold` (what a submission would hold)."""
    kept = [p.detections.scores >= score_threshold for p in predictions]
    return rsna_map(
        [p.detections.boxes[keep] for p, keep in zip(predictions, kept, strict=True)],
        [p.detections.scores[keep] for p, keep in zip(predictions, kept, strict=True)],
        [p.truth for p in predictions],
    )


def flat_metrics(result: EvalResult) -> dict[str, float]:
    """The numbers of an EvalResult as one flat dict (for logs, CSV and `eval --json`)."""
    return {
        "mean_iou": result.mean_iou,
        "mae_px": result.mae_px,
        "rsna_map": result.rsna_map,
        "coco_map_50": result.coco_map_50,
        "coco_map_50_95": result.coco_map_50_95,
        "n_images": result.n_images,
        **{f"std_{k}": v for k, v in result.prediction_std.items()},
    }


def folder_loader(
    images: str | Path, labels: dict, config: TrainConfig, batch_size: int | None = None
) -> DataLoader:
    """An in-order, non-augmented loader over `images` for the given labels (eval / predict)."""
    transforms = build_transforms(train=False, size=config.image_size)
    dataset = RSNADataset(images, labels, transforms, intensity=config.intensity)
    return DataLoader(
        dataset,
        batch_size=batch_size or config.batch_size,
        collate_fn=collate_samples,
        num_workers=config.num_workers,
    )
