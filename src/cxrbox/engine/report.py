"""Human-readable summaries printed at the end of a command."""

from __future__ import annotations

from cxrbox.engine.train import TrainResult, format_epoch


def print_training_summary(result: TrainResult) -> None:
    """Per-epoch table, the best epoch, the alarms raised, and where the outputs are."""
    print(f"\ncxrbox train: {len(result.epochs)} epoch(s) -> {result.run_dir}")
    for record in result.epochs:
        print("  " + format_epoch(record))
    if result.epochs:
        best = max(result.epochs, key=lambda r: _finite_or(r["val_mean_iou"], -1.0))
        print(
            f"best epoch {best['epoch']}: val mean IoU {best['val_mean_iou']:.3f}, "
            f"RSNA mAP {best['val_rsna_map']:.3f} (checkpoint {result.run_dir / 'best.pt'})"
        )
    if result.events:
        names = sorted({e.name for e in result.events})
        print(f"alarms raised: {len(result.events)} ({', '.join(names)}); see metrics.jsonl")
    else:
        print("alarms raised: none (no collapse, dead gradients, stalled updates)")
    print(f"metrics: {result.run_dir / 'metrics.csv'}  plots: {result.run_dir / 'plots'}")


def _finite_or(value: float, default: float) -> float:
    return value if value == value else default
