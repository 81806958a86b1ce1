"""What a plan assumes when a checkpoint or a dataset is not on this machine: published shapes and sizes.

A checkpoint directory is recognised by its name (`/models/vicuna-7b-v1.5` -> LLaMA-7B's shape); a dataset
file by its name (`llava_v1_5_mix665k.json`). Present files are always read instead. Shapes are the
checkpoints' own config.json fields; dataset sizes are record counts of the released files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# HF config fields of the LLaMA-family checkpoints VLM studies use (their config.json)
LLAMA_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
LLAMA_13B = {**LLAMA_7B, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40}
LLAMA_13B.update(num_attention_heads=40, num_key_value_heads=40)
LLAMA3_8B = {**LLAMA_7B, "intermediate_size": 14336, "num_key_value_heads": 8, "vocab_size": 128256}
LLAMA3_8B.update(max_position_embeddings=8192, rope_theta=500000.0)

KNOWN_LLMS: list[tuple[str, str, dict]] = [  # (pattern on the directory name, what it is, config fields)
    (r"llama-?3(\.\d)?-8b", "LLaMA-3-8B", LLAMA3_8B),
    (r"(vicuna|llama-2|llama)-13b", "LLaMA-13B", LLAMA_13B),
    (r"(vicuna|llama-2|llama)-7b", "LLaMA-7B", LLAMA_7B),
]


def _tower(family, hidden, layers, heads, intermediate, patch, image):
    return {
        "family": family,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "patch_size": patch,
        "image_size": image,
    }


KNOWN_TOWERS: list[tuple[str, str, dict]] = [  # transformer towers (`model.vision.id: vit` with a `path`)
    (r"clip-vit-large-patch14-336", "CLIP ViT-L/14-336", _tower("clip", 1024, 24, 16, 4096, 14, 336)),
    (r"clip-vit-large-patch14$", "CLIP ViT-L/14", _tower("clip", 1024, 24, 16, 4096, 14, 224)),
    (r"clip-vit-base-patch16", "CLIP ViT-B/16", _tower("clip", 768, 12, 12, 3072, 16, 224)),
    (r"siglip-base-patch16-224", "SigLIP B/16-224", _tower("siglip", 768, 12, 12, 3072, 16, 224)),
    (r"vit-large-patch16-224", "ViT-L/16", _tower("vit", 1024, 24, 16, 4096, 16, 224)),
    (r"siglip-so400m-patch14-384", "SigLIP So400m/14-384", _tower("siglip", 1152, 27, 16, 4304, 14, 384)),
    (r"dinov2-large", "DINOv2 ViT-L/14", _tower("dinov2", 1024, 24, 16, 4096, 14, 224)),
    (r"vit-?det-b|vit-base-patch16-224", "ViT-B/16", _tower("vit", 768, 12, 12, 3072, 16, 224)),
    (r"vit-?det-s|vit-small-patch16-224|deit-small", "ViT-S/16", _tower("vit", 384, 12, 6, 1536, 16, 224)),
]


def match(table: list[tuple[str, str, dict]], path: str) -> tuple[str, dict] | None:
    """(what it is, fields) of the first entry whose pattern is found in the path's last component."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    for pattern, what, fields in table:
        if re.search(pattern, name):
            return what, fields
    return None


@dataclass(frozen=True)
class DatasetStats:
    """What the plan needs of a training set: its records, the share without an image, and its text length in
    the LLaMA tokenizer under the llava-v1 template (system prompt, roles, every turn)."""

    items: int
    text_only: float
    mean_text_tokens: float
    mean_answer_tokens: float
    max_text_tokens: int | None  # the longest record; None: longer than any train.max_length (it cuts them)
    source: str


KNOWN_DATASETS: dict[str, DatasetStats] = {
    # LLaVA-1.5's instruction mix: 665,298 records, ~40k ShareGPT conversations without an image; ~250 text
    # tokens per record is the figure benchmarks/RESULTS.md's loader sizing uses (an estimate, not a count)
    "llava_v1_5_mix665k.json": DatasetStats(665_298, 0.06, 250.0, 120.0, None, "LLaVA-1.5 release; tokens estimated"),
    # LLaVA's 558k caption set: one short instruction and a BLIP caption per image (~35 tokens), plus the
    # llava-v1 system prompt and roles (~35 tokens); no record near 128
    "blip_laion_cc_sbu_558k.json": DatasetStats(558_128, 0.0, 70.0, 20.0, 128, "LLaVA-1.5 release; tokens estimated"),
}

# evaluation splits (task, split) -> questions, for the evaluation part of the cost
KNOWN_EVAL_SIZES: dict[tuple[str, str], int] = {
    ("gqa", "testdev"): 12_578,
    ("gqa-llava", "testdev"): 12_578,
    ("pope", "test"): 8_910,
    ("pope-llava", "test"): 8_910,
    ("textvqa", "val"): 5_000,
    ("textvqa-llava", "val"): 5_000,
    ("refcoco", "testA"): 5_657,
    ("vqav2", "val"): 214_354,
}
