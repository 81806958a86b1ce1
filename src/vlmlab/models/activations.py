"""How many activation elements a part keeps per item: what the memory pre-flight multiplies by batch and precision.

Each part describes itself with an `Activations` (`VisionEncoder.activations()`, `LanguageBackbone.activations(T)`)
built from the layer formulas here. The counts follow the per-layer accounting of "Reducing Activation
Recomputation in Large Transformer Models" (Korthikanti et al., arXiv 2205.05198) for transformer layers and
the tensors the blocked selective scan keeps for state-space layers; their coefficients were checked against
the tensors autograd actually saves (`tests/test_memory_preflight.py` holds them within the stated factor).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Activations:
    """Elements per item: `saved` what one forward keeps for backward; `checkpointed` what it keeps with activation
    checkpointing (each layer's input plus one layer recomputed at a time); `transient` the largest working set
    of one layer (what a no-grad forward, e.g. evaluation, needs at its peak)."""

    saved: int
    checkpointed: int
    transient: int

    def __add__(self, other: Activations) -> Activations:
        return Activations(
            self.saved + other.saved,
            self.checkpointed + other.checkpointed,
            max(self.transient, other.transient),
        )


NONE = Activations(0, 0, 0)


def transformer_layers(
    tokens: int, hidden: int, intermediate: int, heads: int, layers: int, gated_mlp: bool, eager: bool
) -> Activations:
    """Pre-norm attention + MLP layers: per token ~10 hidden-sized tensors (norms, q/k/v, attention output,
    projections, residuals) and 2 (GELU MLP) or 4 (gated SwiGLU MLP) intermediate-sized ones; eager attention
    also keeps the (heads x tokens x tokens) scores and probabilities, which fused (sdpa) attention does not."""
    mlp = (4 if gated_mlp else 2) * intermediate
    attention = 2 * heads * tokens if eager else 2 * heads
    per_layer = tokens * (10 * hidden + mlp + attention)
    return Activations(
        saved=layers * per_layer,
        checkpointed=layers * tokens * hidden + per_layer,
        transient=tokens * (2 * hidden + max(mlp, attention)),
    )


def selective_scan_layers(
    tokens: int, inner: int, d_state: int, directions: int, layers: int, scan: float, one_direction_at_a_time: bool
) -> Activations:
    """Mamba-style layers: the blocked scan keeps ~`scan` (tokens x inner x d_state) tensors per direction
    (decays, inputs, running states and products), plus ~10 inner-sized tensors per token per direction
    (projections, convolution, gates). These towers are not checkpointed: `checkpointed` is `saved`. Without
    gradients only the direction being scanned is alive when the directions run one after another (Vim's
    two), all of them when they are batched (VMamba's four)."""
    per_direction = tokens * inner * (round(scan * d_state) + 10)
    per_layer = directions * per_direction
    transient = per_direction if one_direction_at_a_time else per_layer
    return Activations(saved=layers * per_layer, checkpointed=layers * per_layer, transient=transient)


def pixels(image_size: int) -> Activations:
    """The input image, kept by the patch embedding's convolution."""
    n = 3 * image_size * image_size
    return Activations(n, n, n)
