"""A user's mistake ends with one clear line naming the key or file, a non-zero exit, no partial output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from vlmlab.cli import main
from vlmlab.config import config_from_dict
from vlmlab.runs import RunDir, training_fingerprint
from vlmlab.train.trainer import Trainer


def _run_cli(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0][len("error: ") :]


def test_missing_config_file(capsys, tmp_path):
    code, err = _run_cli(capsys, ["train", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert _one_line(err).startswith(f"{tmp_path / 'nope.yaml'}: config file not found")


def test_unknown_backbone_in_yaml_exits_2_as_a_subprocess(tiny_raw, tmp_path):
    tiny_raw["model"]["llm"]["id"] = "lama3"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw))
    proc = subprocess.run(
        [sys.executable, "-m", "vlmlab", "train", str(path), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        _one_line(proc.stderr)
        == "model.llm.id: unknown backbone 'lama3' (known: llama1-tiny, llama2-tiny, llama3-tiny, hf)"
    )
    assert not (tmp_path / "r").exists()


def test_invalid_yaml_names_file_and_line(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {vision: [\n")
    code, err = _run_cli(capsys, ["train", str(path)])
    assert code == 2 and str(path) in _one_line(err)


def test_eval_of_a_missing_run(capsys, tmp_path):
    code, err = _run_cli(capsys, ["eval", str(tmp_path / "nothing")])
    assert code == 1 and _one_line(err) == f"{tmp_path / 'nothing'}: not a run directory (config.yaml missing)"


@pytest.fixture
def trained_run(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path / "run").run_training()
    return RunDir(tmp_path / "run")


def test_missing_checkpoint(capsys, trained_run):
    (trained_run.final / "model.safetensors").unlink()
    code, err = _run_cli(capsys, ["eval", str(trained_run.path)])
    assert code == 1 and "no final checkpoint" in _one_line(err)
    assert not trained_run.predictions().exists()


def test_corrupt_checkpoint(capsys, trained_run):
    (trained_run.final / "model.safetensors").write_bytes(b"\x00garbage")
    code, err = _run_cli(capsys, ["eval", str(trained_run.path)])
    assert code == 1 and "model.safetensors does not match its sha256 in manifest.json" in _one_line(err)
    (trained_run.final / "manifest.json").unlink()  # a checkpoint from before manifests: refused unverified
    code, err = _run_cli(capsys, ["eval", str(trained_run.path)])
    assert code == 1 and "final: no manifest.json, so its files cannot be verified" in _one_line(err)
    code, err = _run_cli(capsys, ["eval", str(trained_run.path), "--allow-unverified"])  # used once, said so
    warning, error = [ln for ln in err.splitlines() if ln.strip()]
    assert warning.startswith("warning: ") and "no manifest.json" in warning and "--allow-unverified" in warning
    assert code == 1 and "not a readable safetensors file" in _one_line(error)  # and still loaded safely


def test_a_bit_flip_in_the_weights_is_found_by_the_manifest(capsys, trained_run):
    """A flipped bit loads fine as safetensors and changes predictions silently; the sha256 manifest catches it."""
    weights = trained_run.final / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # inside the last tensor's data
    weights.write_bytes(bytes(data))
    code, err = _run_cli(capsys, ["eval", str(trained_run.path)])
    assert code == 1 and "final: model.safetensors does not match its sha256" in _one_line(err)


def test_projector_with_mismatched_dims(capsys, trained_run):
    cfg = yaml.safe_load(trained_run.config.read_text())
    cfg["model"]["llm"]["hidden_size"] = 48
    cfg["model"]["llm"]["num_heads"] = 4
    trained_run.config.write_text(yaml.safe_dump(cfg))
    state_file = trained_run.final / "trainer_state.json"  # as if the checkpoint had been copied beside another config
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps(dict(state, training_fingerprint=training_fingerprint(cfg))))
    from vlmlab.checkpoint import write_manifest

    write_manifest(trained_run.final)  # a whole checkpoint, consistent in itself
    code, err = _run_cli(capsys, ["eval", str(trained_run.path)])
    line = _one_line(err)
    assert code == 1 and "mismatched dims" in line and "model.safetensors" in line
    assert not trained_run.predictions().exists()


def _jsonl_task(tmp_path, image_bytes: bytes | None):
    root = tmp_path / "data"
    root.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(root / "good.png")
    if image_bytes is not None:
        (root / "bad.png").write_bytes(image_bytes)
    recs = [
        {"id": 0, "image": "good.png", "question": "what color is the shape?", "answer": "red"},
        {"id": 1, "image": "bad.png", "question": "what color is the shape?", "answer": "red"},
    ]
    (root / "test.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return root


@pytest.mark.parametrize(
    "content,message",
    [
        (b"\x89PNG\r\n\x1a\n truncated", "not a readable image"),
        (None, "image file not found"),
    ],
)
def test_corrupt_or_missing_image(capsys, trained_run, tmp_path, content, message):
    root = _jsonl_task(tmp_path, content)
    cfg = yaml.safe_load(trained_run.config.read_text())
    cfg["data"]["eval"] = [{"task": "vqa-jsonl", "split": "test", "path": str(root)}]
    trained_run.config.write_text(yaml.safe_dump(cfg))
    code, err = _run_cli(capsys, ["eval", str(trained_run.path)])
    line = _one_line(err)
    assert code == 1 and line.startswith(f"{root / 'bad.png'}: {message}")
    assert not trained_run.predictions().exists()


def test_bad_record_names_file_and_line(tiny_raw, tmp_path):
    from vlmlab.data.sources import load_source
    from vlmlab.errors import DataError

    root = _jsonl_task(tmp_path, None)
    with open(root / "test.jsonl", "a") as fh:
        fh.write('{"id": 2, "image": "../../etc/passwd", "question": "q", "answer": "a"}\n')
    tiny_raw["data"]["eval"] = [{"task": "vqa-jsonl", "split": "test", "path": str(root)}]
    cfg = config_from_dict(tiny_raw)
    with pytest.raises(DataError, match=r"test.jsonl:3: image path '../../etc/passwd' leaves the dataset directory"):
        load_source(cfg.data.eval[0], "data.eval.0")


@pytest.mark.parametrize(
    "part, fields",
    [
        ("llm", {"hidden_size": 4096, "num_layers": 64, "num_heads": 32}),
        ("vision", {"hidden_size": 4096, "num_layers": 64, "num_heads": 32}),
        ("vision", {"id": "vmamba", "hidden_size": 2048, "depths": [64, 64, 64], "patch_size": 4, "tap_stage": 1}),
    ],
)
def test_a_part_too_big_for_memory_is_refused_before_allocating(capsys, tiny_raw, tmp_path, monkeypatch, part, fields):
    from vlmlab.models import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * 2**30)  # a 2 GiB machine
    tiny_raw["model"][part] = {**tiny_raw["model"][part], **fields} if "id" not in fields else fields
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_raw))
    code, err = _run_cli(capsys, ["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    line = _one_line(err)
    assert code == 2 and line.startswith(f"model.{part}: ") and "GiB for the weights alone" in line, line
    assert not (tmp_path / "run").exists()
