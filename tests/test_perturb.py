"""Deterministic evaluation-time image perturbations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vlmlab.data.eval_mode import EvalMode
from vlmlab.data.perturb import Perturbation, parse_perturbation
from vlmlab.errors import UserError


def _image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_noise_is_deterministic_per_image_and_has_the_asked_spread():
    img = np.full((64, 64, 3), 128, dtype=np.uint8)
    p = parse_perturbation("noise:0.1")
    a, b = p.apply(img, "x.png"), p.apply(img, "x.png")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, p.apply(img, "y.png"))
    assert abs((a.astype(float) / 255).std() - 0.1) < 0.01
    assert np.array_equal(Perturbation("noise", 0.0).apply(img, "x.png"), img)


def test_shift_translates_right_and_down_with_edge_fill():
    img = _image()
    out = parse_perturbation("shift:3").apply(img, "x.png")
    assert np.array_equal(out[3:, 3:], img[:-3, :-3])
    assert np.array_equal(out[:3, 3:], np.repeat(img[:1, :-3], 3, axis=0))
    assert np.array_equal(parse_perturbation("shift:0").apply(img, "x.png"), img)


@pytest.mark.parametrize("spec", ["blur:1", "noise", "noise:x", "shift:1.5", "noise:-1"])
def test_bad_specs_are_usage_errors(spec):
    with pytest.raises(UserError) as exc:
        parse_perturbation(spec)
    assert exc.value.exit_code == 2 and spec in str(exc.value)


def test_perturbed_eval_writes_its_own_records_and_the_drop(tiny_cfg, tmp_path):
    from vlmlab.evaluation.evaluate import evaluate_run
    from vlmlab.runs import RunDir
    from vlmlab.train.trainer import Trainer

    Trainer(tiny_cfg, tmp_path / "run").run_training()
    run = RunDir(tmp_path / "run")
    clean = evaluate_run(run.path)
    noisy = evaluate_run(run.path, mode=EvalMode.parse("noise:0.2"))
    records = pd.read_parquet(run.predictions(EvalMode.parse("noise:0.2")))
    assert run.predictions(EvalMode.parse("noise:0.2")).name == "predictions_noise-0.2.parquet"
    assert (records["perturb"] == "noise-0.2").all() and len(records) == 24
    drop = noisy["perturbation_drop"]["easy-vqa"]
    assert drop["n"] == 24
    assert abs(drop["gap"] - (clean["overall"]["accuracy"] - noisy["overall"]["accuracy"])) < 1e-12
    assert run.predictions().is_file() and pd.read_parquet(run.predictions())["perturb"].eq("").all()
    with pytest.raises(UserError, match="exclude each other"):
        EvalMode(blind=True, perturbation=parse_perturbation("shift:2"))


def test_a_shift_moves_the_gold_box_with_the_object():
    """The box answer after `shift:px` is where the object is in the shifted image (IoU >= 0.9), not where it was."""
    from vlmlab.data.images import format_box
    from vlmlab.data.perturb import shift_box_answer
    from vlmlab.metrics import box_iou, parse_box

    size, px = 64, 6
    image = np.full((size, size, 3), 128, dtype=np.uint8)
    image[20:40, 10:30] = (255, 0, 0)  # rows y 20-39, columns x 10-29
    gold = format_box([10 / size * 100, 20 / size * 100, 30 / size * 100, 40 / size * 100])
    shifted = parse_perturbation(f"shift:{px}").apply(image, "k")
    ys, xs = np.nonzero((shifted == (255, 0, 0)).all(-1))
    seen = format_box(
        [xs.min() / size * 100, ys.min() / size * 100, (xs.max() + 1) / size * 100, (ys.max() + 1) / size * 100]
    )
    moved = shift_box_answer(parse_perturbation(f"shift:{px}"), gold, size)
    assert box_iou(parse_box(moved), parse_box(seen)) >= 0.9 and box_iou(parse_box(gold), parse_box(seen)) < 0.7
    assert shift_box_answer(parse_perturbation(f"shift:{px}"), "red", size) == "red"  # not a box: unchanged
    assert shift_box_answer(parse_perturbation("noise:0.1"), gold, size) == gold  # noise moves nothing
    assert shift_box_answer(parse_perturbation("shift:40"), "[50, 50, 90, 90]", size) == "[99, 99, 99, 99]"  # clipped
