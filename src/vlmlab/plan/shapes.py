"""A variant's model as shapes only: every part built on the meta device (no weights, no memory, no download).

Each part is built by its own class from fields, as the trainer builds it, so parameter counts, activation
counts and FLOPs come from the model's own modules. What a checkpoint would supply comes from its local
`config.json` when the directory exists, else from the published shape its name identifies
(`vlmlab.plan.known`); a checkpoint neither present nor known is one line naming the key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from vlmlab.config import RunConfig
from vlmlab.errors import ConfigError
from vlmlab.models.llm.base import LanguageBackbone
from vlmlab.models.llm.box_tokens import add_box_tokens
from vlmlab.models.llm.hf import DTYPES, HFCausalLM, _prompt_format
from vlmlab.models.llm.tiny import TinyLlama, llama_config
from vlmlab.models.llm.tokenizer_training import train_bpe_tokenizer
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.plan.known import KNOWN_LLMS, KNOWN_TOWERS, match
from vlmlab.registry import LLM_BACKBONES, PROJECTORS, ROUTING, VISION_ENCODERS

MAX_CONFIG_BYTES = 1 << 20  # a checkpoint's config.json is a few KB; anything larger is not read


@dataclass
class ShapeModel:
    """The variant's model on the meta device; `tokenizer` says whether its tokenizer is the real one (token
    counts can be measured) or a stand-in (they are estimated); `notes` say what was assumed."""

    model: VisionLanguageModel
    real_tokenizer: bool
    notes: list[str] = field(default_factory=list)


def shape_model(cfg: RunConfig, texts: Callable[[], list[str]]) -> ShapeModel:
    """Build `cfg`'s model on the meta device. `texts` gives the training texts a tiny rung's tokenizer is fit to
    (called only when needed)."""
    notes: list[str] = []
    m = cfg.model
    with torch.device("meta"):
        vision = _vision(cfg, notes)
        llm, real = _llm(cfg, texts, notes)
        projector = PROJECTORS.get(m.projector.id).build(
            m.projector.params, vision_dim=vision.embed_dim, llm_dim=llm.embed_dim
        )
        routing_params = m.routing.params
        if getattr(routing_params, "layer", None) == "auto":  # DPVR's k is read off a measured profile
            k = llm.num_layers - 1
            routing_params = routing_params.model_copy(update={"layer": k})
            notes.append(f"model.routing.layer: auto is not measured yet; costed at k = {k} (an upper bound)")
        routing = ROUTING.get(m.routing.id).build(routing_params, llm=llm)
        if m.box_tokens:
            add_box_tokens(llm)
    return ShapeModel(VisionLanguageModel(vision, projector, llm, routing), real, notes)


def _vision(cfg: RunConfig, notes: list[str]):
    part, size = cfg.model.vision, cfg.data.image.size
    params = part.params
    if getattr(params, "path", None) is not None:
        if part.id == "vit":
            params = _tower_params(params, size, notes)
        else:  # the SSM towers' shapes are their fields; the weights only fill them
            params = params.model_copy(update={"path": None})
    return VISION_ENCODERS.get(part.id).build(params, image_size=size)


def _tower_params(params, size: int, notes: list[str]):
    """A `vit` tower with a `path`: its shape from the local config.json, else from its name."""
    path = Path(params.path)
    if (path / "config.json").is_file():
        raw = _read_config(path / "config.json", "model.vision.path")
        raw = raw.get("vision_config", raw)  # a full CLIP/SigLIP config nests the tower's
        shape = {
            k: raw[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size") if k in raw
        }
        shape.update(intermediate_size=raw.get("intermediate_size"), image_size=raw.get("image_size", size))
        shape["family"] = params.family
        what = f"{path}/config.json"
    else:
        known = match(KNOWN_TOWERS, str(path))
        if known is None:
            raise ConfigError(
                "model.vision.path",
                f"{path} is not on this machine and its name is no known tower; copy its config.json there "
                "(the plan reads shapes only)",
            )
        what, shape = known
        notes.append(f"model.vision: {path} not here; {what}'s published shape")
    if int(shape["image_size"]) != size:
        raise ConfigError("data.image.size", f"{size} but the vision tower {what} expects {shape['image_size']}")
    hidden = int(shape["hidden_size"])
    return params.model_copy(
        update={
            "path": None,
            "family": shape["family"],
            "patch_size": int(shape["patch_size"]),
            "hidden_size": hidden,
            "num_layers": int(shape["num_hidden_layers"]),
            "num_heads": int(shape["num_attention_heads"]),
            "mlp_ratio": (int(shape.get("intermediate_size") or 4 * hidden) + 0.5) / hidden,
        }
    )


def _llm(cfg: RunConfig, texts: Callable[[], list[str]], notes: list[str]) -> tuple[LanguageBackbone, bool]:
    part = cfg.model.llm
    cls, params = LLM_BACKBONES.get(part.id), part.params
    if issubclass(cls, HFCausalLM):
        return _hf_llm(params, notes)
    if issubclass(cls, TinyLlama):
        tokenizer, real = _tiny_tokenizer(cls, params, texts, notes)
        return cls(
            AutoModelForCausalLM.from_config(llama_config(params, tokenizer)), tokenizer, params.prompt_format()
        ), real
    raise ConfigError("model.llm.id", f"{part.id}: the plan knows no way to read this backbone's shape")


def _hf_llm(params, notes: list[str]) -> tuple[LanguageBackbone, bool]:
    path = Path(params.path)
    tokenizer, real = None, False
    if (path / "config.json").is_file():
        raw = _read_config(path / "config.json", "model.llm.path")
        if raw.get("model_type") not in (None, "llama", "mistral"):
            raise ConfigError("model.llm.path", f"{path}: model_type {raw.get('model_type')!r} is not LLaMA-family")
        fields = raw
        if (path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file():
            from transformers import AutoTokenizer

            tokenizer, real = AutoTokenizer.from_pretrained(str(path)), True
    else:
        known = match(KNOWN_LLMS, str(path))
        if known is None:
            raise ConfigError(
                "model.llm.path",
                f"{path} is not on this machine and its name is no known LLM; copy its config.json there "
                "(the plan reads shapes only)",
            )
        what, fields = known
        notes.append(f"model.llm: {path} not here; {what}'s published shape")
    keep = {k: v for k, v in fields.items() if k in LlamaConfig().to_dict() and k != "model_type"}
    config = LlamaConfig(**keep)
    lm = AutoModelForCausalLM.from_config(
        config, dtype=DTYPES[params.dtype], attn_implementation=params.attn_implementation
    )
    tokenizer = tokenizer or stand_in_tokenizer()
    return HFCausalLM(lm, tokenizer, _prompt_format(params.template, tokenizer.chat_template)), real


def _tiny_tokenizer(cls, params, texts, notes) -> tuple[PreTrainedTokenizerFast, bool]:
    """The tokenizer a tiny rung trains with: its cached rung's, the given `tokenizer_path`, or (random init)
    one fit to the training texts; a stand-in when the pretrained rung is not built yet."""
    if params.tokenizer_path:
        return PreTrainedTokenizerFast.from_pretrained(params.tokenizer_path), True
    if params.init == "random":
        return train_bpe_tokenizer(texts(), params.vocab_size, params.tokenizer), True
    from vlmlab.lm.corpus import load_corpus
    from vlmlab.lm.pretrain import backbone_dir

    path = backbone_dir(cls.part_id, params.architecture(), params.pretrain, load_corpus(params.pretrain.corpus))
    if (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path)), True
    notes.append(f"model.llm: the {cls.part_id} rung is not built yet (vlmlab pretrain-lm); token counts estimated")
    return stand_in_tokenizer(), False


def stand_in_tokenizer() -> PreTrainedTokenizerFast:
    """A two-token tokenizer for a backbone whose own is absent: the model's shapes come from its config, and
    token counts are then estimated from characters (`vlmlab.plan.data`)."""
    core = Tokenizer(WordLevel({"<unk>": 0, "</s>": 1}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>")


def _read_config(path: Path, key: str) -> dict:
    """A checkpoint's config.json: a JSON object of bounded size (an untrusted file never runs code)."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(key, f"{path} is larger than {MAX_CONFIG_BYTES} bytes; not a config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(key, f"{path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(key, f"{path}: not a JSON object")
    return raw
