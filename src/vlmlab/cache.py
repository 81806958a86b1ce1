"""The user cache (`$VLMLAB_CACHE`, default ~/.cache/vlmlab): generated datasets and pretrained parts, keyed by recipe.

What lives under it is each owner's business: `data.shapes_world` (datasets), `lm.pretrain` (backbones),
`train.vision_pretrain` (pretrained towers)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "VLMLAB_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vlmlab")
