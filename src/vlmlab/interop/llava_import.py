"""`vlmlab import-llava DIR OUT`: a LLaVA-format HF checkpoint becomes a vlmlab run dir (eval, attention, CKA, routing).

The run dir holds the vision tower and the causal LM as from_pretrained dirs under `parts/` (named by
`config.yaml`), and only the projector in `checkpoints/final/model.safetensors`: the weights are stored
once. `checkpoints/final/trainer_state.json` lists the groups that come from `parts/`; each part has its own
`manifest.json`, verified with `final`'s whenever the run is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlmlab import checkpoint as ckpt
from vlmlab import io
from vlmlab.config import config_from_dict
from vlmlab.errors import UserError
from vlmlab.models.llm.hf import DTYPES
from vlmlab.models.local_checkpoint import safetensors_only
from vlmlab.run_layout import FINGERPRINT
from vlmlab.runs import RunDir, training_fingerprint

VISION_FAMILIES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}
PARTS_KEY = "parts_from_pretrained"  # trainer_state.json: module groups whose weights live in parts/<group>


def read_llava_config(path: Path) -> dict[str, Any]:
    """The checkpoint's config.json, checked to be a LLaVA architecture vlmlab can express."""
    file = path / "config.json"
    if not file.is_file():
        raise UserError(f"{path}: no checkpoint here (config.json missing)")
    config = io.read_record(file)
    if config.get("model_type") != "llava":
        raise UserError(f"{file}: model_type is {config.get('model_type')!r}, not 'llava'")
    vision_type = config.get("vision_config", {}).get("model_type")
    if vision_type not in VISION_FAMILIES:
        raise UserError(f"{file}: vision tower {vision_type!r} is not a CLIP or SigLIP transformer")
    if config.get("projector_hidden_act", "gelu") != "gelu" or not isinstance(
        config.get("vision_feature_layer", -2), int
    ):
        raise UserError(f"{file}: only a GELU projector and a single vision_feature_layer are supported")
    return config


def import_llava(
    path: str | Path,
    out: str | Path,
    template: str = "native",
    dtype: str = "float32",
    allow_pickle: bool = False,
    evals: list[dict[str, Any]] | None = None,
) -> Path:
    """Convert the checkpoint at `path` into a run dir at `out` (written to a temp dir, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration

    path = Path(path)
    config = read_llava_config(path)
    out = io.require_fresh_dir(out, "output directory")
    try:
        llava = LlavaForConditionalGeneration.from_pretrained(
            path, dtype=DTYPES[dtype], **safetensors_only(path, allow_pickle, "--allow-pickle")
        )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)  # never a checkpoint's own code
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: cannot load the LLaVA checkpoint ({str(exc).splitlines()[0]})") from None
    tokenizer.chat_template = tokenizer.chat_template or getattr(processor, "chat_template", None)

    with io.atomic_dir(out) as tmp:
        run = RunDir(tmp)
        llava.model.vision_tower.save_pretrained(tmp / "parts" / "vision")
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(llava.config.text_config)
        lm.get_decoder().load_state_dict(llava.model.language_model.state_dict(), assign=True)
        lm.get_output_embeddings().load_state_dict(llava.lm_head.state_dict(), assign=True)
        lm.save_pretrained(tmp / "parts" / "llm")
        tokenizer.save_pretrained(tmp / "parts" / "llm")
        for part in ("vision", "llm"):  # the parts are weights too: verified on every load, like `final`
            ckpt.write_manifest(tmp / "parts" / part)

        cfg = run_config(config, processor.image_processor, out, template, dtype, evals or [])
        config_from_dict(cfg)  # e.g. an unknown --eval task: one line, before anything is renamed into place
        io.write_yaml(run.config, cfg)
        proj = llava.model.multi_modal_projector
        weights = {
            f"projector.net.{i}.{k}": v.detach().contiguous()
            for i, layer in ((0, proj.linear_1), (2, proj.linear_2))
            for k, v in layer.state_dict().items()
        }
        run.final.mkdir(parents=True)
        from safetensors.torch import save_file

        save_file(weights, str(run.final / ckpt.WEIGHTS))
        (run.final / ckpt.STATE).write_text(
            json.dumps(
                {
                    "done": True,
                    PARTS_KEY: ["vision", "llm"],
                    FINGERPRINT: training_fingerprint(cfg),
                }
            )
        )
        ckpt.write_manifest(run.final)
        io.write_json(tmp / "imported.json", {"source": str(path.resolve()), "llava_config": config})
    return out


def run_config(
    config: dict[str, Any], image_processor, out: Path, template: str, dtype: str, evals: list[dict[str, Any]]
) -> dict[str, Any]:
    """The vlmlab config of the imported model: parts read from `out/parts`, LLaVA's image size and statistics."""
    vision = config["vision_config"]
    family = VISION_FAMILIES[vision["model_type"]]
    strategy = config.get("vision_feature_select_strategy", "default")
    size = vision.get("image_size", 336)
    return {
        "name": out.name,
        "seed": 0,
        "model": {
            "vision": {
                "id": "vit",
                "family": family,
                "path": str((out / "parts" / "vision").resolve()),
                "feature_layer": config.get("vision_feature_layer", -2),
                "use_cls": family == "clip" and strategy == "full",
            },
            "projector": {"id": "gelu-mlp"},
            "llm": {"id": "hf", "path": str((out / "parts" / "llm").resolve()), "template": template, "dtype": dtype},
            "routing": {"id": "full"},
        },
        "data": {
            "eval": evals,
            "image": {
                "size": size,
                "geometry": "resize",
                "mean": [float(x) for x in getattr(image_processor, "image_mean", [0.5] * 3)],
                "std": [float(x) for x in getattr(image_processor, "image_std", [0.5] * 3)],
            },
        },
    }
