"""`vlmlab export RUN --format hf-llava OUT`: a LlavaForConditionalGeneration checkpoint, when the parts allow one."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from vlmlab import io
from vlmlab.config import RunConfig
from vlmlab.errors import UserError
from vlmlab.interop.model_card import write_model_card
from vlmlab.models.vlm import VisionLanguageModel
from vlmlab.runs import load_run_model

FAMILIES = {"clip": True, "siglip": False}  # vision family -> whether its tower has a CLS token to drop


def why_not_llava(model: VisionLanguageModel, cfg: RunConfig) -> str | None:
    """None if the run maps onto LLaVA's architecture exactly; else the reason, naming the config key."""
    m = cfg.model
    if not type(model.routing).plain_decoder:
        return (
            f"model.routing.id is {m.routing.id!r}: LLaVA runs every token through every layer (needs a "
            "strategy whose model is the plain decoder, e.g. `full`)"
        )
    if m.vision.id != "vit" or m.vision.params.family not in FAMILIES:
        kind = m.vision.params.family if m.vision.id == "vit" else m.vision.id
        return f"model.vision is {kind!r}: LLaVA's vision tower here is a CLIP or SigLIP transformer"
    if m.vision.params.family == "siglip" and model.vision.feature_layer in (
        -1,
        model.vision.tower.config.num_hidden_layers,
    ):
        return (
            "model.vision.feature_layer -1 reads SigLIP's post-LayerNorm output, which LLaVA never does; "
            "train with feature_layer -2 (LLaVA's choice)"
        )
    if m.projector.id != "gelu-mlp" or m.projector.params.norm:
        return f"model.projector is {m.projector.id!r}{' with norm' if m.projector.params.norm else ''}: LLaVA's connector is `gelu-mlp` without norm"
    if any(stage.lora is not None for stage in cfg.train.stages):
        return "train.stages use LoRA: merge the adapters first (export of unmerged adapters is not supported)"
    if cfg.data.image.geometry != "resize":
        return "data.image.geometry is letterbox-square: the HF LLaVA image processor only resizes"
    return None


def to_llava(model: VisionLanguageModel, cfg: RunConfig):
    """The same weights as a `LlavaForConditionalGeneration` (vision tower, projector, LM, LM head)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    reason = why_not_llava(model, cfg)
    if reason:
        raise UserError(f"cannot export as hf-llava: {reason}", exit_code=2)
    vision, lm = model.vision, model.llm.lm
    has_cls = FAMILIES[cfg.model.vision.params.family]
    strategy = "default" if has_cls and not vision.use_cls else "full"
    config = LlavaConfig(
        vision_config=vision.tower.config.to_dict(),
        text_config=lm.config.to_dict(),
        image_token_index=model.llm.image_token_id,
        image_seq_length=vision.num_tokens,
        projector_hidden_act="gelu",
        vision_feature_select_strategy=strategy,
        vision_feature_layer=vision.feature_layer,
        multimodal_projector_bias=True,
    )
    llava = LlavaForConditionalGeneration(config).eval()
    # generate() stops where vlmlab does: at the prompt format's stop token (llama3: <|eot_id|>), not the LM's eos
    llava.generation_config.eos_token_id = model.llm.stop_token_id
    llava.generation_config.pad_token_id = model.llm.pad_token_id
    if model.llm.image_token_id >= lm.get_input_embeddings().num_embeddings:
        llava.resize_token_embeddings(model.llm.image_token_id + 1)
    parts = [
        (llava.model.vision_tower, vision.tower.state_dict()),
        (llava.model.multi_modal_projector.linear_1, model.projector.net[0].state_dict()),
        (llava.model.multi_modal_projector.linear_2, model.projector.net[2].state_dict()),
        (llava.model.language_model, lm.get_decoder().state_dict()),
        (llava.lm_head, lm.get_output_embeddings().state_dict()),
    ]
    with torch.no_grad():
        for module, state in parts:
            if module is llava.model.language_model and "embed_tokens.weight" in state:
                rows = state["embed_tokens.weight"]
                emb = module.embed_tokens.weight
                emb[: rows.shape[0]] = (
                    rows  # extra rows (the image token) are never read: masked_scatter overwrites them
                )
                state = {k: v for k, v in state.items() if k != "embed_tokens.weight"}
                missing, unexpected = module.load_state_dict(state, strict=False)
                missing = [k for k in missing if k != "embed_tokens.weight"]
            else:
                missing, unexpected = module.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise UserError(f"cannot export as hf-llava: weights do not line up ({(missing or unexpected)[0]})")
    return llava


def export_hf_llava(run_dir: str | Path, out: str | Path) -> Path:
    """Write the run as a LLaVA checkpoint dir (model, tokenizer with chat template, processor, and a model card
    README.md), atomically."""
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    model, cfg = load_run_model(run_dir)
    llava = to_llava(model, cfg)
    out = io.require_fresh_dir(out, "output directory")
    with io.atomic_dir(out) as tmp:
        llava.save_pretrained(tmp)
        model.llm.save_tokenizer(tmp / "tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(tmp / "tokenizer")
        tokenizer.chat_template = model.llm.prompt.chat_template
        shutil.rmtree(tmp / "tokenizer")
        size, image = model.vision.image_size, cfg.data.image
        processor = LlavaProcessor(
            image_processor=CLIPImageProcessor(
                do_resize=True,
                size={"height": size, "width": size},
                do_center_crop=False,
                resample=3,  # PIL bicubic, as vlmlab.data.images
                do_rescale=True,
                rescale_factor=1 / 255,
                do_normalize=True,
                image_mean=list(image.mean),
                image_std=list(image.std),
                do_convert_rgb=True,
            ),
            tokenizer=tokenizer,
            patch_size=model.vision.patch_size,
            image_token="<image>",
            vision_feature_select_strategy=llava.config.vision_feature_select_strategy,
            num_additional_image_tokens=1 if FAMILIES[cfg.model.vision.params.family] else 0,
            chat_template=model.llm.prompt.chat_template,
        )
        processor.save_pretrained(tmp)
        write_model_card(run_dir, tmp, "hf-llava")  # README.md: recipe, parts, data, seed, time, scores, study
    return out
