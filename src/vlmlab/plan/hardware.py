"""The machines a plan prices a study on: peak FLOP/s, memory, and the model FLOP utilization (MFU) assumed.

Peaks are the vendors' dense (no sparsity) bf16 tensor-core figures; `cpu` is the fp32 GEMM peak measured on
the 2-core reference machine (its memory bandwidth, 20 GB/s, is an assumption). Bandwidths are the vendors'
figures and price only evaluation's decoding steps, which are bound by reading the weights. The MFU is a measured figure where vlmlab has one (benchmarks/RESULTS.md, "MFU of
the training step"), else a stated assumption: 0.40 for GPUs, the figure benchmarks/RESULTS.md already sizes
the data loader with, below the ~0.55 that Megatron-scale dense trainings reach ("Reducing Activation
Recomputation in Large Transformer Models", Korthikanti et al., arXiv 2205.05198) because a VLM step also runs
a frozen tower, short sequences and a data pipeline. `--mfu` overrides it. The `cpu` memory is what this machine
has available (`models.memory.available_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmlab.errors import ConfigError
from vlmlab.models.memory import available_bytes

USABLE = 0.90  # a variant fits when its estimated peak stays below this share of the card's memory


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_flops: float  # per device, per second
    memory_bytes: int  # per device
    bandwidth: float  # memory bytes per second (what a decoding step is bound by)
    mfu: float  # model FLOP utilization assumed for training
    mfu_source: str  # measured (where) or assumed (why)

    @property
    def usable_bytes(self) -> int:
        return int(self.memory_bytes * USABLE)


_ASSUMED = "assumed (no GPU MFU measured for vlmlab yet; docs/scaling.md)"
_GB = 10**9

HARDWARE = {
    h.name: h
    for h in (
        Hardware("a100-40gb", 312e12, 40 * _GB, 1.555e12, 0.40, _ASSUMED),
        Hardware("a100-80gb", 312e12, 80 * _GB, 2.039e12, 0.40, _ASSUMED),
        Hardware("h100-80gb", 989e12, 80 * _GB, 3.35e12, 0.40, _ASSUMED),
        Hardware("h100-pcie", 756e12, 80 * _GB, 2.0e12, 0.40, _ASSUMED),
        Hardware("h200", 989e12, 141 * _GB, 4.8e12, 0.40, _ASSUMED),
        Hardware("l40s", 362e12, 48 * _GB, 0.864e12, 0.40, _ASSUMED),
        Hardware(
            "cpu",
            221.9e9,
            16 * 2**30,
            20e9,
            0.557,
            "measured: vlmlab Trainer, LLM hidden 128, 2-core EPYC, fp32 (benchmarks/RESULTS.md)",
        ),
    )
}


def hardware(name: str, mfu: float | None = None, key: str = "launcher.gpu") -> Hardware:
    """The named machine, with `mfu` in place of its default when given."""
    if name not in HARDWARE:
        raise ConfigError(key, f"unknown GPU {name!r} (known: {', '.join(HARDWARE)})")
    h = HARDWARE[name]
    if name == "cpu":
        h = Hardware(h.name, h.peak_flops, available_bytes() or h.memory_bytes, h.bandwidth, h.mfu, h.mfu_source)
    if mfu is None:
        return h
    if not 0 < mfu <= 1:
        raise ConfigError("--mfu", f"{mfu} is not a share in (0, 1]")
    return Hardware(h.name, h.peak_flops, h.memory_bytes, h.bandwidth, mfu, "given (--mfu)")
