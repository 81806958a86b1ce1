"""Helpers of the security suite (tests/test_security*.py): a fresh `python -m vlmlab` per case, run side by side,
the one-line assertion, snapshots that prove nothing outside changed, a trained tiny run to copy, and the forger's
tools (a config edit made consistent again)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from PIL import Image

from conftest import TINY
from vlmlab.checkpoint import write_manifest
from vlmlab.runs import RunDir, training_fingerprint

MARKER = "code-ran.marker"  # what hostile code would write; its absence is the proof that none ran


def cli(*argv: str, env: dict | None = None, timeout: int = 300) -> tuple[int, str, str]:
    """`python -m vlmlab ARGV` in a fresh process: (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "vlmlab", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "VLMLAB_NO_PROGRESS": "1", **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr


def in_parallel(calls: list[tuple]) -> list[tuple[int, str, str]]:
    """Run `cli(*argv)` for each argv at once (3 at a time)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda argv: cli(*argv), calls))


def one_line(code: int, err: str, expected_code: int, *fragments: str) -> str:
    """Assert that the command ended in one `error:` line (after any progress lines it printed), no traceback, the
    exit code and the fragments; return the line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    assert code == expected_code, (code, err)
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (links not followed): to prove nothing changed."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def fast_config(tmp: Path) -> Path:
    raw = json.loads(json.dumps(TINY))
    for stage, steps in zip(raw["train"]["stages"], (1, 2)):
        stage["max_steps"] = steps
    raw["train"]["checkpoint_every"] = 1
    raw["data"]["eval"][0]["limit"] = 4
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train_tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run): a tiny run trained once per test module (its `trained` fixture); tests work on copies."""
    from vlmlab.cli import main

    tmp = tmp_path_factory.mktemp("trained")
    config = fast_config(tmp)
    assert main(["train", str(config), "--out", str(tmp / "run"), "--no-eval"]) == 0
    return config, tmp / "run"


def copy_run(trained, dest: Path) -> RunDir:
    shutil.copytree(trained[1], dest, symlinks=True)
    return RunDir(dest)


def forge(run: RunDir, change) -> None:
    """Edit the run's config and make the directory consistent again, as an attacker can: a new training
    fingerprint and a rewritten manifest (both unkeyed hashes anyone can recompute)."""
    raw = yaml.safe_load(run.config.read_text())
    change(raw)
    run.config.write_text(yaml.safe_dump(raw))
    state = json.loads((run.final / "trainer_state.json").read_text())
    state["training_fingerprint"] = training_fingerprint(raw)
    (run.final / "trainer_state.json").write_text(json.dumps(state))
    write_manifest(run.final)


def vqa_dir(root: Path, records: list[dict], size: int = 32) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (200, 30, 30)).save(root / "red.png")
    (root / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return root


def llava_dir(root: Path, records: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (30, 200, 30)).save(root / "green.png")
    (root / "mix.json").write_text(json.dumps(records))
    return root / "mix.json"


def turns(*texts: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]
