"""The kit's whole checklist on a small model no one here wrote (MONAI's RetinaNet example in
tests/kit_examples): the figure behind "the checklist runs within a minute". Run with
`tox -e bench` (or `pytest tests/benchmarks/test_bench_kit.py --benchmark-enable`)."""

from __future__ import annotations

import pytest

pytest.importorskip("monai")


@pytest.mark.slow
@pytest.mark.benchmark(group="kit")
def test_whole_checklist_on_monai_retinanet(benchmark):
    from tests.kit_examples.monai_retinanet import make_detector

    from cxrbox.testing import run_detector_checklist

    results = benchmark.pedantic(
        run_detector_checklist, args=(make_detector(),), rounds=1, iterations=1
    )
    benchmark.extra_info["seconds_per_check"] = {r.name: r.numbers["seconds"] for r in results}
    # batchnorm is skipped (a warn): the example has no BatchNorm layer.
    assert [r.status for r in results] == ["pass"] * 8 + ["warn"]
    assert results[-1].name == "batchnorm"
