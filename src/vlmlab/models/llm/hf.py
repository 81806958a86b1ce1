"""`hf`: any causal LM from a local directory (AutoModelForCausalLM + its tokenizer and chat template)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer

from vlmlab import grants
from vlmlab.errors import UserError
from vlmlab.models.llm.base import LanguageBackbone
from vlmlab.models.llm.prompts import FORMATS, VICUNA, PromptFormat
from vlmlab.models.local_checkpoint import safetensors_only
from vlmlab.registry import PartParams, register_llm

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@register_llm("hf")
class HFCausalLM(LanguageBackbone):
    """A local HF checkpoint. `template: native` uses the tokenizer's own chat template (vicuna if none)."""

    class Params(PartParams):
        identity_fields = ("template",)  # a factor that swaps checkpoints swaps their chat templates with them
        path: str
        template: Literal["native", "vicuna", "llava-v1", "llama3"] = "native"
        dtype: Literal["float32", "bfloat16", "float16"] = "float32"
        attn_implementation: Literal["sdpa", "eager"] = "sdpa"
        # run Python shipped with the checkpoint: asked here, allowed only by --trust-remote-code (vlmlab.grants)
        trust_remote_code: bool = False
        allow_pickle: bool = False  # load pytorch_model.bin (pickle) when the dir has no safetensors (+ --allow-pickle)

    @classmethod
    def build(
        cls,
        params: HFCausalLM.Params,
        *,
        tokenizer_dir: str | Path | None = None,
        texts: Iterable[str] | None = None,
        pretrained_weights: bool = True,
    ):
        path = Path(params.path)
        if not (path / "config.json").is_file():
            raise UserError(f"{path}: no causal-LM checkpoint here (config.json missing) [model.llm.path]")
        tok_path = Path(tokenizer_dir) if tokenizer_dir is not None else path
        weights = safetensors_only(path, params.allow_pickle, "model.llm")
        remote = grants.permit(
            "trust_remote_code",
            params.trust_remote_code,
            "model.llm.trust_remote_code",
            f"run Python shipped with {path}",
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tok_path), trust_remote_code=remote)
            lm = AutoModelForCausalLM.from_pretrained(
                str(path),
                dtype=DTYPES[params.dtype],
                attn_implementation=params.attn_implementation,
                trust_remote_code=remote,
                **weights,
            )
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            raise UserError(f"{path}: cannot load checkpoint ({str(exc).splitlines()[0]})") from None
        return cls(lm, tokenizer, _prompt_format(params.template, tokenizer.chat_template))


def _prompt_format(template: str, native: str | None) -> PromptFormat:
    if template != "native":
        return FORMATS[template]
    if not native:
        return VICUNA
    return replace(VICUNA, name="native", chat_template=native, answer_prefix="")
