"""`vlmlab bench vision`: every tower of a study's vision factor, timed and measured at each image size."""

from __future__ import annotations

import json

import yaml

from vlmlab.cli import main


def test_bench_vision_compares_the_study_towers_across_sizes(tmp_path, tiny_raw, capsys):
    spec = {
        "name": "b",
        "base": tiny_raw,
        "factors": {
            "vision": {
                "keys": ["model.vision"],
                "levels": {
                    "vit": {
                        "model.vision": {
                            "id": "vit",
                            "patch_size": 8,
                            "hidden_size": 32,
                            "num_layers": 1,
                            "num_heads": 2,
                        }
                    },
                    "vmamba": {
                        "model.vision": {
                            "id": "vmamba",
                            "patch_size": 8,
                            "hidden_size": 16,
                            "depths": [1, 1],
                            "tap_stage": 2,
                            "d_state": 4,
                        }
                    },
                },
            }
        },
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert (
        main(
            [
                "bench",
                "vision",
                str(tmp_path / "s.yaml"),
                "--sizes",
                "32",
                "40",
                "64",
                "--repeats",
                "1",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    record = json.loads((tmp_path / "out" / "vision_bench.json").read_text())
    rows = {(r["tower"], r["side"]): r for r in record["rows"]}
    assert rows[("vit", 32)]["tokens"] == 16 and rows[("vit", 64)]["tokens"] == 64
    assert "not divisible" in rows[("vmamba", 40)]["skipped"]  # stride 16 does not divide 40: said, not hidden
    for tower in ("vit", "vmamba"):  # more pixels: more activations kept for backward
        assert rows[(tower, 64)]["activation_mib"] > rows[(tower, 32)]["activation_mib"] > 0
        assert rows[(tower, 32)]["forward_ms"] > 0
    assert {g["tower"] for g in record["growth"]} == {"vit", "vmamba"}
    assert (tmp_path / "out" / "vision_bench.png").stat().st_size > 1000
    printed = capsys.readouterr()
    assert "vmamba: 32 -> 64 px costs" in printed.out + printed.err
    assert "vmamba       40 px skipped: data.image.size: 40 is not divisible" in printed.out + printed.err


def test_activation_memory_counts_each_saved_storage_once():
    import torch

    from vlmlab.measure.vision_bench import activation_mib
    from vlmlab.models.vision.base import VisionFeatures

    class Square(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            y = x * self.w  # saves x (and w)
            return VisionFeatures(tokens=(y * y).flatten(2), grid=(1, 1))  # saves y once, though used twice

    x = torch.zeros(1, 3, 256, 256)  # 768 KiB
    assert abs(activation_mib(Square(), x) - 2 * 0.75) < 0.01
