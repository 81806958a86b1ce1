"""The LM pretraining recipe of a backbone rung: corpus, token budget, sequence length, optimiser."""

from __future__ import annotations

from pydantic import Field

from vlmlab.lm.corpus import BUILTIN
from vlmlab.registry import PartParams


class PretrainRecipe(PartParams):
    """`tokens` counts training positions (steps x batch_size x seq_len); more tokens than the corpus = more epochs."""

    corpus: str = BUILTIN  # `bsd-fortunes` or a directory of .txt files
    tokens: int = Field(1_000_000, ge=1)
    seq_len: int = Field(128, ge=8)
    batch_size: int = Field(16, ge=1)  # sequences per optimiser step
    lr: float = Field(2e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_ratio: float = Field(0.02, ge=0, le=1)
    weight_decay: float = Field(0.1, ge=0)
    seed: int = 0

    @property
    def steps(self) -> int:
        per_step = self.batch_size * self.seq_len
        return max(1, -(-self.tokens // per_step))
