"""Deterministic evaluation-time image perturbations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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
    noisy = evaluate_run(run.path, perturb=parse_perturbation("noise:0.2"))
    records = pd.read_parquet(run.predictions(perturb="noise-0.2"))
    assert (records["perturb"] == "noise-0.2").all() and len(records) == 24
    drop = noisy["perturbation_drop"]["easy-vqa"]
    assert drop["n"] == 24
    assert abs(drop["gap"] - (clean["overall"]["accuracy"] - noisy["overall"]["accuracy"])) < 1e-12
    assert run.predictions().is_file() and pd.read_parquet(run.predictions())["perturb"].eq("").all()
    with pytest.raises(UserError, match="exclude each other"):
        evaluate_run(run.path, blind=True, perturb=parse_perturbation("shift:2"))
