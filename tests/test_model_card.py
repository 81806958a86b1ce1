"""`vlmlab export` writes a model card: recipe, parts, data, seed, training time, scores with n, the study."""

from __future__ import annotations

import json
import re

import yaml

from vlmlab.cli import main
from vlmlab.study.runner import run_study


def test_export_of_a_study_variant_carries_its_model_card(tmp_path, tiny_raw):
    tiny_raw["model"]["vision"].update(family="clip", feature_layer=-2)
    spec = {
        "name": "card",
        "base": tiny_raw,
        "factors": {"llm": {"keys": ["model.llm.id"], "levels": {"gen3": {"model.llm.id": "llama3-tiny"}}}},
        "seeds": [7],
        "eval": {"blind": True},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    study = run_study(tmp_path / "s.yaml", tmp_path / "study")
    run = study.dir.run("gen3", 7).path
    assert main(["export", str(run), str(tmp_path / "llava")]) == 0
    card = (tmp_path / "llava" / "README.md").read_text()

    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: image-text-to-text\n")
    config = (run / "config.yaml").read_text()
    assert yaml.safe_load(card.split("```yaml\n")[1].split("```")[0]) == yaml.safe_load(config)  # the resolved recipe
    assert "| vision | `vit` | family clip, patch_size 16, hidden_size 32, num_layers 1, feature_layer -2 |" in card
    assert "| llm | `llama3-tiny` | template llama3, hidden_size 32, num_layers 2, num_heads 4" in card
    assert "- Seed: 7 (fixes initialization and data order)." in card
    assert "- Training data: `easy-vqa:train` (limit 64)." in card
    assert "| finetune | 1.0 | 4 | projector 0.001, llm 0.001 | - | as above |" in card
    train = json.loads((run / "train.json").read_text())
    assert f"- 6 optimizer steps in {train['seconds']:.0f} s ({train['samples_per_s']:.1f} samples/s)" in card
    for mode, file in (("clean", "metrics.json"), ("blind", "metrics_blind.json")):
        m = json.loads((run / file).read_text())["per_task"]["easy-vqa"]
        assert f"| {mode} | easy-vqa | exact_match | {m['accuracy']:.4f} | {m['n']} |" in card and m["n"] == 24
    gap = json.loads((run / "metrics_blind.json").read_text())["visual_reliance_gap"]["easy-vqa"]
    assert f"| easy-vqa: clean − blind accuracy (visual reliance) | {gap['gap']:+.4f} | 24 |" in card
    fingerprint = json.loads(study.dir.control.read_text())["config"]["fingerprint"]
    assert re.search(rf"Study `card`, variant `gen3` \(llm = gen3\), seed 7; .* `{fingerprint}`", card)


def test_a_run_outside_a_study_says_so(tmp_path):
    from vlmlab.interop.model_card import model_card

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"name": "r", "seed": 1, "model": {}, "data": {}}))
    card = model_card(tmp_path)
    assert "- Not part of a vlmlab study." in card
    assert "The run has not been evaluated" in card and "no training record" in card
