"""The memory pre-flight: the peak of one training micro-batch per stage and of evaluation, checked before a run starts.

An estimate, per process: weights, gradients and AdamW state of what a stage trains, the decoded images a run
holds, and activations at the configured image size, token count, batch size, precision and checkpointing
(`models.activations`). Under FSDP / ZeRO the optimizer state is sharded, so the estimate is an upper bound
there; with DPVR or FastV routing fewer vision tokens reach the later layers, an upper bound too. A run whose
estimate exceeds the available memory (free GPU memory, or the OS's available RAM) is refused with one line
naming the keys that drive it; `train.memory_check: false` skips the check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmlab.config import RunConfig
from vlmlab.errors import EXIT_MEMORY, UserError
from vlmlab.models.activations import NONE
from vlmlab.models.memory import available_bytes

GROUPS = ("vision", "projector", "llm")


@dataclass(frozen=True)
class Extent:
    """What the estimate needs of a run's data (`VQADataset.extent()`): the longest training sequence in tokens
    (vision tokens included), the most supervised tokens of a row, the longest evaluation prompt, the distinct
    images and the bytes of decoded images the data pipeline keeps."""

    tokens: int
    answer_tokens: int
    prompt_tokens: int
    images: int
    image_bytes: int


@dataclass
class Footprint:
    """Bytes by component for one phase (a training stage's micro-batch, or evaluation), and the keys behind each."""

    phase: str
    parts: dict[str, int] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # parts whose activations are not estimated

    def add(self, name: str, nbytes: int, keys: str) -> None:
        if nbytes > 0:
            self.parts[name] = self.parts.get(name, 0) + int(nbytes)
            self.keys[name] = keys

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        terms = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {gib(n)}" for name, n in terms)


def gib(n: int) -> str:
    if n < 2**30:
        return f"{n / 2**20:,.1f} MiB"
    return f"{n / 2**30:,.2f} GiB" if n < 2**40 else f"{n / 2**40:,.1f} TiB"


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _lora_params(model, lora) -> int:
    """LoRA adapters' parameters: r x (in + out) per targeted linear layer of the LLM."""
    total = 0
    for name, module in model.llm.lm.named_modules():
        if name.rsplit(".", 1)[-1] in lora.target_modules and hasattr(module, "in_features"):
            total += lora.r * (module.in_features + module.out_features)
    return total


def stage_footprint(model, cfg: RunConfig, s: int, extent: Extent) -> Footprint:
    """Peak bytes of one micro-batch of training stage `s` on data of the given extent."""
    tokens, answer_tokens = extent.tokens, extent.answer_tokens
    stage, train = cfg.train.stages[s], cfg.train
    key = f"train.stages.{s}"
    batch = stage.batch_size or train.batch_size
    batch_key = f"{key}.batch_size" if stage.batch_size else "train.batch_size"
    elem = 2 if train.mixed_precision in ("bf16", "fp16") else 4
    fp = Footprint(f"training stage {s} ({stage.name}), micro-batch {batch}")
    fp.add("weights", _param_bytes(model), "model.*")
    size_keys = "data.image.size, model.vision.patch_size"
    vision_acts = model.vision.activations()
    if vision_acts is None:
        fp.unknown.append(f"model.vision ({cfg.model.vision.id})")
        vision_acts = NONE
    if not stage.kind.on_sequences:  # the tower alone, on every labelled image held in memory at once
        trained = sum(p.numel() for p in model.vision.parameters())
        fp.add("gradients + AdamW state", trained * 12, f"{key}.lr.vision, model.vision")
        fp.add("decoded images", 3 * cfg.data.image.size**2 * extent.images, "data.image.size")
        fp.add("vision activations", batch * vision_acts.saved * elem, f"{size_keys}, {batch_key}")
        return _with_update_peak(fp, trained, f"{key}.lr.vision, model.vision")
    trained_groups = [g for g in GROUPS if stage.lr.get(g, 0) > 0]
    trained = sum(
        _lora_params(model, stage.lora)
        if g == "llm" and stage.lora is not None
        else sum(p.numel() for p in getattr(model, g).parameters())
        for g in trained_groups
    )
    fp.add("gradients + AdamW state", trained * 12, f"{key}.lr ({'+'.join(trained_groups) or 'nothing'} trained)")
    fp.add("decoded images", extent.image_bytes, "data.image.size")
    ckpt = train.gradient_checkpointing
    checkpointed_tower = ckpt and getattr(
        getattr(model.vision, "tower", None), "supports_gradient_checkpointing", False
    )
    if "vision" in trained_groups:
        per_image = vision_acts.checkpointed if checkpointed_tower else vision_acts.saved
    else:  # a frozen tower runs without keeping anything for backward
        per_image = vision_acts.transient
    fp.add("vision activations", batch * per_image * elem, f"{size_keys}, {batch_key}, train.gradient_checkpointing")
    if trained_groups:
        llm = model.llm.activations(tokens)
        vision_tokens = model.num_image_tokens
        projector = vision_tokens * (model.vision.embed_dim + 2 * model.llm.embed_dim)
        per_item = (llm.checkpointed if ckpt else llm.saved) + projector
        fp.add(
            "LLM activations",
            batch * per_item * elem,
            f"{batch_key}, {size_keys} ({vision_tokens:,} vision tokens of {tokens:,}), train.gradient_checkpointing",
        )
        vocab = model.llm.lm.config.vocab_size
        fp.add("logits", batch * answer_tokens * vocab * 4 * 2, f"{batch_key}")
    return _with_update_peak(fp, trained, f"{key}.lr")


ACTIVATION_PARTS = ("vision activations", "LLM activations", "logits")


def _with_update_peak(fp: Footprint, trained: int, keys: str) -> Footprint:
    """The optimizer step runs after backward has freed the activations, but torch's AdamW (foreach) holds an
    fp32 temporary the size of its state while it updates: the step's peak is the larger of the two."""
    activations = sum(fp.parts.get(name, 0) for name in ACTIVATION_PARTS)
    fp.add("AdamW update temporaries", trained * 4 - activations, keys)  # only what exceeds the activations
    return fp


def eval_footprint(model, cfg: RunConfig, tokens: int, image_bytes: int = 0) -> Footprint:
    """Peak bytes of one evaluation batch: weights, the KV cache over prompt + new tokens, the largest layer's
    working set, the last position's logits."""
    batch, new = cfg.eval.batch_size, cfg.eval.max_new_tokens
    elem = 2 if cfg.train.mixed_precision in ("bf16", "fp16") else 4
    fp = Footprint(f"evaluation, batch {batch}")
    fp.add("weights", _param_bytes(model), "model.*")
    fp.add("decoded images", image_bytes, "data.image.size")
    layers = model.llm.num_layers
    fp.add(
        "KV cache",
        batch * 2 * layers * model.llm.kv_dim * (tokens + new) * elem,
        "eval.batch_size, eval.max_new_tokens, data.image.size, model.vision.patch_size",
    )
    vision = model.vision.activations() or NONE
    largest = max(vision.transient, model.llm.activations(tokens + new).transient)
    fp.add(
        "activations",
        batch * largest * elem,
        "eval.batch_size, data.image.size, model.vision.patch_size",
    )
    fp.add("logits", batch * model.llm.lm.config.vocab_size * 4, "eval.batch_size")
    return fp


def training_footprints(model, cfg: RunConfig, stage_extents: list[Extent] | Extent, eval_extent: Extent | None = None):
    """Every stage's micro-batch (on its data's extent: one for all stages, or one per stage) and the evaluation
    after training (on `eval_extent`, by default the first stage's)."""
    n = len(cfg.train.stages)
    extents = stage_extents if isinstance(stage_extents, list) else [stage_extents] * n
    out = [stage_footprint(model, cfg, s, extents[s]) for s in range(n)]
    last = eval_extent or extents[0]
    return [*out, eval_footprint(model, cfg, last.prompt_tokens, last.image_bytes)]


def check_fits(footprints: list[Footprint], available: int | None = None, what: str = "this run") -> None:
    """Refuse (one line, exit 5) when a phase's estimate exceeds the available memory, naming its largest
    component and the keys behind it."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    worst = max(footprints, key=lambda f: f.total)
    if worst.total <= available:
        return
    biggest = max(worst.parts, key=worst.parts.get)
    raise UserError(
        f"memory pre-flight: {what} would need about {gib(worst.total)} in {worst.phase} ({worst.describe()}), "
        f"more than the {gib(available)} available; the largest part, {biggest}, is driven by "
        f"{worst.keys[biggest]} (train.memory_check: false skips this check)",
        exit_code=EXIT_MEMORY,
    )
