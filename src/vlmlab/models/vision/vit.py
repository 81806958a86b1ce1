"""`vit`: transformers ViT / CLIP / SigLIP / DINOv2 vision towers, built from a config or a local dir."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from safetensors import SafetensorError

from vlmlab.errors import ConfigError, UserError
from vlmlab.models.activations import Activations, pixels, transformer_layers
from vlmlab.models.local_checkpoint import safetensors_only
from vlmlab.models.memory import build_if_it_fits
from vlmlab.models.vision.base import VisionEncoder, VisionFeatures
from vlmlab.registry import PartParams, register_vision_encoder

# family -> (config class name, model class name, whether the tower prepends a CLS token)
_FAMILIES = {
    "vit": ("ViTConfig", "ViTModel", True),
    "clip": ("CLIPVisionConfig", "CLIPVisionModel", True),
    "siglip": ("SiglipVisionConfig", "SiglipVisionModel", False),
    "dinov2": ("Dinov2Config", "Dinov2Model", True),
}


@register_vision_encoder("vit")
class ViTEncoder(VisionEncoder):
    """A transformer vision tower; tokens come from `feature_layer` (LLaVA uses -2), CLS optional."""

    class Params(PartParams):
        family: Literal["vit", "clip", "siglip", "dinov2"] = "vit"
        path: str | None = None  # local dir for from_pretrained; None = build from the fields below
        patch_size: int = Field(8, ge=1, le=1024)
        hidden_size: int = Field(128, ge=8, le=16384)
        num_layers: int = Field(4, ge=1, le=256)
        num_heads: int = Field(4, ge=1, le=256)
        mlp_ratio: float = Field(4.0, gt=0, le=16)
        feature_layer: int = -1
        use_cls: bool = False
        allow_pickle: bool = False  # with `path`: load pytorch_model.bin (pickle) when there are no safetensors

    def __init__(self, tower: torch.nn.Module, family: str, feature_layer: int, use_cls: bool):
        super().__init__()
        self.tower = tower
        self.family = family
        self.feature_layer = feature_layer
        cfg = tower.config
        self.image_size = int(cfg.image_size)
        self.patch_size = int(cfg.patch_size)
        self.embed_dim = int(cfg.hidden_size)
        self.grid = (self.image_size // self.patch_size, self.image_size // self.patch_size)
        self.has_cls = _FAMILIES[family][2]
        self.use_cls = use_cls and self.has_cls
        n_layers = int(cfg.num_hidden_layers)
        if not -n_layers - 1 <= feature_layer <= n_layers:
            raise ConfigError("model.vision.feature_layer", f"{feature_layer} is outside [-{n_layers + 1}, {n_layers}]")
        self.num_tokens = self.grid[0] * self.grid[1] + int(self.use_cls)

    @classmethod
    def build(cls, params: ViTEncoder.Params, *, image_size: int) -> ViTEncoder:
        import transformers

        config_name, model_name, _ = _FAMILIES[params.family]
        model_cls = getattr(transformers, model_name)
        if params.path is not None:
            path = Path(params.path)
            if not (path / "config.json").is_file():
                raise UserError(f"{path}: no vision checkpoint here (config.json missing) [model.vision.path]")
            try:
                tower = model_cls.from_pretrained(path, **safetensors_only(path, params.allow_pickle, "model.vision"))
            except (OSError, ValueError, KeyError, SafetensorError) as exc:
                raise UserError(f"{path}: cannot load vision tower ({str(exc).splitlines()[0]})") from None
            if int(tower.config.image_size) != image_size:
                raise ConfigError(
                    "data.image.size", f"{image_size} but the vision tower at {path} expects {tower.config.image_size}"
                )
        else:
            if image_size % params.patch_size:
                raise ConfigError(
                    "model.vision.patch_size", f"{params.patch_size} does not divide data.image.size {image_size}"
                )
            if params.hidden_size % params.num_heads:
                raise ConfigError(
                    "model.vision.num_heads", f"{params.num_heads} does not divide hidden_size {params.hidden_size}"
                )
            config = getattr(transformers, config_name)(
                image_size=image_size,
                patch_size=params.patch_size,
                hidden_size=params.hidden_size,
                num_hidden_layers=params.num_layers,
                num_attention_heads=params.num_heads,
                intermediate_size=int(params.hidden_size * params.mlp_ratio),
            )
            kwargs = {"add_pooling_layer": False} if params.family == "vit" else {}
            tower = build_if_it_fits(lambda: model_cls(config, **kwargs), "model.vision")
        return cls(tower, params.family, params.feature_layer, params.use_cls)

    def activations(self) -> Activations:
        cfg = self.tower.config
        tokens = self.grid[0] * self.grid[1] + int(self.has_cls)  # the tower runs every layer on every token
        layers = transformer_layers(
            tokens,
            int(cfg.hidden_size),
            int(cfg.intermediate_size),
            int(cfg.num_attention_heads),
            int(cfg.num_hidden_layers),
            gated_mlp=False,
            eager=getattr(cfg, "_attn_implementation", "eager") == "eager",
        )
        return pixels(self.image_size) + layers

    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:
        last = self.feature_layer in (-1, self.tower.config.num_hidden_layers)
        out = self.tower(pixel_values=pixel_values, output_hidden_states=not last)
        hidden = out.last_hidden_state if last else out.hidden_states[self.feature_layer]
        if self.has_cls and not self.use_cls:
            hidden = hidden[:, 1:]
        return VisionFeatures(tokens=hidden, grid=self.grid)
