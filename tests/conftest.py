"""Shared fixtures: tiny configs that build and train in seconds on 2 CPU cores."""

from __future__ import annotations

import copy
import os
import tempfile

import pytest
import torch

from vlmlab.parts import load_builtin_parts

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")
os.environ.setdefault("VLMLAB_CACHE", tempfile.mkdtemp(prefix="vlmlab-test-cache-"))
torch.set_num_threads(2)

load_builtin_parts()  # the application edge: what the CLI does at start-up

TINY = {
    "name": "tiny",
    "seed": 0,
    "model": {
        "vision": {"id": "vit", "patch_size": 16, "hidden_size": 32, "num_layers": 1, "num_heads": 2},
        "projector": {"id": "gelu-mlp"},
        "llm": {"id": "llama2-tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "init": "random"},
    },
    "data": {
        "train": {"task": "easy-vqa", "split": "train", "limit": 64},
        "eval": [{"task": "easy-vqa", "split": "test", "limit": 24}],
        "image": {"size": 32},
    },
    "train": {
        "batch_size": 8,
        "stages": [
            {"name": "align", "max_steps": 2, "lr": {"projector": 1e-3}},
            {"name": "finetune", "max_steps": 4, "lr": {"projector": 1e-3, "llm": 1e-3}},
        ],
        "log_every": 1,
    },
    "eval": {"batch_size": 16, "max_new_tokens": 4},
}


@pytest.fixture
def tiny_raw():
    """A fresh copy of the tiny config as plain data (mutate freely)."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_cfg(tiny_raw):
    from vlmlab.config import config_from_dict

    return config_from_dict(tiny_raw)


def pytest_terminal_summary(terminalreporter):
    """How many fuzzed inputs each property-based test tried, and how they ended (issue: count the cases)."""
    from _fuzz import TALLY

    if TALLY:
        terminalreporter.section("fuzzed bad input")
        for family, outcomes in TALLY.items():
            parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
            terminalreporter.write_line(f"{family}: {sum(outcomes.values())} cases ({parts})")
