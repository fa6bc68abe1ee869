"""Deploy: export to ONNX (FP32, int8), the one inference interface, one decode, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch

import cxrbox.modeling.decode
from cxrbox.cli import main
from cxrbox.config import TrainConfig
from cxrbox.data.labels import write_rsna_labels
from cxrbox.data.loaders import resolve_splits
from cxrbox.deploy.inference import load_inference_model, load_trained_model, score_threshold_source
from cxrbox.deploy.onnx_export import export_onnx
from cxrbox.deploy.onnx_model import OnnxModel
from cxrbox.deploy.pipeline import export_checkpoint, int8_path
from cxrbox.engine.checkpoint import load_checkpoint, save_checkpoint
from cxrbox.engine.train import train
from cxrbox.errors import ModelFileError
from cxrbox.evaluation.evaluate import evaluate, flat_metrics, folder_loader
from cxrbox.modeling.model import build_model
from cxrbox.options import DEFAULT_INTENSITY
from cxrbox.testing import shifted_copies


@pytest.fixture(scope="module")
def run(tiny_rsna, tmp_path_factory):
    """A 2-epoch tiny run, its exports (FP32 + int8, no probe) and its validation split."""
    root = tmp_path_factory.mktemp("deploy")
    config = TrainConfig(
        images=str(tiny_rsna / "stage_2_train_images"),
        labels=str(tiny_rsna / "stage_2_train_labels.csv"),
        out=str(root / "run"), image_size=64, batch_size=8, width=0.5, epochs=2,
        val_fraction=0.25, plots=False,
    )  # fmt: skip
    result = train(config, progress=False)
    out = root / "model.onnx"
    export = export_checkpoint(
        result.run_dir / "best.pt", out, int8=True, calibration_n=16, probe=False
    )
    splits = resolve_splits(config)
    val_csv = write_rsna_labels(root / "val.csv", splits.val_labels)
    return {
        "result": result, "checkpoint": result.run_dir / "best.pt", "out": out, "export": export,
        "splits": splits, "val_csv": val_csv, "stride": config.stride,
    }  # fmt: skip


@pytest.fixture(scope="module")
def stride16(tiny_rsna, tmp_path_factory):
    """An untrained stride-16 model (random weights and BN statistics, so its raw output
    varies) saved as a checkpoint and exported like `run` (FP32 + int8 + report, no probe)."""
    from tests.integration.conftest import tiny_config_for

    root = tmp_path_factory.mktemp("deploy16")
    config = tiny_config_for(tiny_rsna, root / "run").replace(
        width=0.25, stride=16, channels_last=False
    )
    torch.manual_seed(0)
    model = build_model(config.head, config.norm, config.width, stride=config.stride)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.2)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    checkpoint = root / "best.pt"
    save_checkpoint({"config": config.to_dict(), "model": model.state_dict()}, checkpoint)
    out = root / "model.onnx"
    export = export_checkpoint(checkpoint, out, int8=True, calibration_n=16, probe=False)
    return {"checkpoint": checkpoint, "out": out, "export": export, "stride": 16}


def _eval(model_path, splits):
    model, config, coding = load_inference_model(model_path)
    loader = folder_loader(splits.val_images, splits.val_labels, config)
    return flat_metrics(evaluate(model, loader, coding, config, torch.device("cpu")))


def test_eval_of_best_pt_reproduces_the_logged_epoch_exactly(run):
    epochs = run["result"].epochs
    best = max(epochs, key=lambda r: r["val_mean_iou"])
    metrics = _eval(run["result"].run_dir / "best.pt", run["splits"])
    for key, value in metrics.items():
        logged = best[f"val_{key}"]
        assert value == logged or (math.isnan(value) and math.isnan(logged)), key


def test_export_writes_both_models_the_report_and_the_png(run):
    out = run["out"]
    for path in (out, int8_path(out), out.with_suffix(".report.json")):
        assert path.is_file(), path
    assert out.with_suffix(".report.png").stat().st_size > 0
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert set(report["models"]) == {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
    assert report["raw_vs_pytorch_fp32"]["onnx_fp32"]["max_abs_diff"] < 1e-4
    assert {"median", "p5"} <= set(report["top_box_iou"])
    assert not list(out.parent.glob(".*tmp*")), "temporary files left behind"


# Both exports: the trained default (stride 32) run and the stride-16 model.
EXPORTS = pytest.mark.parametrize("exported", ["run", "stride16"])


@EXPORTS
def test_int8_model_is_quantized_and_self_describing(exported, request):
    out = request.getfixturevalue(exported)["out"]
    graph = onnx.load(str(int8_path(out))).graph
    assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    meta = OnnxModel(int8_path(out)).metadata
    assert (meta.precision, meta.image_size, meta.intensity) == ("int8", 64, DEFAULT_INTENSITY)


def test_the_tuned_score_threshold_travels_with_the_exported_model_and_says_so(run):
    meta = OnnxModel(int8_path(run["out"])).metadata
    stored = load_checkpoint(run["result"].run_dir / "best.pt")["score_threshold"]
    assert stored["tuned"] and meta.score_threshold == stored["value"]
    assert "tuned on validation" in score_threshold_source(int8_path(run["out"]))


@EXPORTS
@pytest.mark.parametrize("kind", ["random", "synthetic"])
def test_onnx_fp32_raw_output_matches_pytorch(exported, kind, request):
    export = request.getfixturevalue(exported)
    model, _, _ = load_trained_model(export["checkpoint"])
    if kind == "random":
        images = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    else:
        images = shifted_copies(4, 1, image_size=64, step=8).images
    with torch.no_grad():
        expected = model(images).float()
    got = OnnxModel(export["out"])(images)
    assert got.shape[-2:] == (64 // export["stride"], 64 // export["stride"])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_int8_stride_16_model_stays_close_to_its_fp32_raw_output(stride16):
    report = stride16["export"].report
    assert report["raw_vs_pytorch_fp32"]["onnx_fp32"]["max_abs_diff"] < 1e-4
    int8 = OnnxModel(int8_path(stride16["out"]))(torch.rand(2, 1, 64, 64))
    assert int8.shape == (2, 5, 4, 4)
    assert report["raw_vs_pytorch_fp32"]["onnx_int8"]["cosine"] > 0.99


def test_eval_through_onnx_and_pt_gives_the_same_metrics(run):
    pt = _eval(run["result"].run_dir / "best.pt", run["splits"])
    fp32 = _eval(run["out"], run["splits"])
    assert pt.keys() == fp32.keys()
    for key in pt:
        assert fp32[key] == pytest.approx(pt[key], abs=1e-5, nan_ok=True), key


def test_both_paths_go_through_the_one_decode(run, monkeypatch):
    """Shift every decoded box: the .pt and the .onnx paths must both move with it."""
    before = {p: _eval(p, run["splits"]) for p in (run["result"].run_dir / "best.pt", run["out"])}
    real = cxrbox.modeling.decode.decode_grid

    def shifted(raw, coding=cxrbox.modeling.decode.GridCoding()):
        boxes, scores = real(raw, coding)
        return (boxes * 0.5), scores

    monkeypatch.setattr(cxrbox.modeling.decode, "decode_grid", shifted)
    for path, metrics in before.items():
        assert _eval(path, run["splits"])["mae_px"] != pytest.approx(metrics["mae_px"]), path


def test_cli_eval_of_the_int8_model_prints_the_checkpoint_keys(run, tiny_rsna, capsys):
    images = str(run["splits"].val_images)
    keys = []
    for model in (run["result"].run_dir / "best.pt", int8_path(run["out"])):
        assert main(["eval", "--model", str(model), "--images", images,
                     "--labels", str(run["val_csv"]), "--json"]) == 0  # fmt: skip
        keys.append(set(json.loads(capsys.readouterr().out)))
    assert keys[0] == keys[1]


def test_a_file_that_is_not_onnx_is_a_typed_error_naming_it(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an onnx model")
    with pytest.raises(ModelFileError, match=r"model\.onnx"):
        OnnxModel(path)


def test_an_onnx_file_without_cxrbox_metadata_is_refused(run, tmp_path):
    model = onnx.load(str(run["out"]))
    del model.metadata_props[:]
    path = tmp_path / "bare.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=r"bare.onnx.*lacks cxrbox\.image_size"):
        load_inference_model(path)


@pytest.mark.parametrize(("field", "value"), [("image_size", "128"), ("channels", "3")])
def test_an_input_that_differs_from_the_metadata_is_refused(run, tmp_path, field, value):
    model = onnx.load(str(run["out"]))
    for prop in model.metadata_props:
        if prop.key == f"cxrbox.{field}":
            prop.value = value
    path = tmp_path / "edited.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError, match=r"edited.onnx: model input must be \[B, "):
        OnnxModel(path)


def test_images_of_another_size_are_refused_naming_the_model(run):
    with pytest.raises(ModelFileError, match=r"model.onnx: expects images \[B, 1, 64, 64\]"):
        OnnxModel(run["out"]).run_numpy(np.zeros((1, 1, 32, 32), np.float32))


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    import cxrbox.deploy.onnx_export

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cxrbox.deploy.onnx_export, "set_metadata", broken)
    out = tmp_path / "m.onnx"
    with pytest.raises(OSError, match="disk full"):
        export_onnx(
            build_model(width=0.25),
            TrainConfig(image_size=64),
            cxrbox.modeling.decode.GridCoding(),
            out,
        )
    assert list(tmp_path.iterdir()) == []


def test_predict_through_onnx_writes_the_same_submission_as_the_checkpoint(run, tmp_path):
    images = str(run["splits"].val_images)
    rows = []
    for model in (run["result"].run_dir / "best.pt", run["out"]):
        out = tmp_path / f"{model.suffix[1:]}.csv"
        args = ["predict", "--model", str(model), "--images", images, "--out", str(out)]
        assert main([*args, "--score-threshold", "0.0"]) == 0
        rows.append(out.read_text().splitlines())
    assert len(rows[0]) == len(rows[1]) > 1
    for pt_row, onnx_row in zip(*rows, strict=True):
        pt_id, pt_boxes = pt_row.split(",")
        onnx_id, onnx_boxes = onnx_row.split(",")
        assert pt_id == onnx_id
        if pt_id != "patientId":
            np.testing.assert_allclose(
                [float(v) for v in onnx_boxes.split()],
                [float(v) for v in pt_boxes.split()],
                atol=1e-3 + 1,
                rtol=0,
            )


def test_bench_inference_times_every_backend_in_one_run(run):
    from cxrbox.speed.bench_inference import benchmark_inference

    rows = benchmark_inference(run["result"].run_dir / "best.pt", (64,), (1, 2), repeats=1)
    assert [(r.backend.split()[0], r.batch_size) for r in rows] == [
        ("pytorch", 1), ("onnxruntime", 1), ("onnxruntime", 1),
        ("pytorch", 2), ("onnxruntime", 2), ("onnxruntime", 2),
    ]  # fmt: skip
    assert all(r.images_per_s > 0 for r in rows)
