"""Model FLOP utilization (MFU) of vlmlab's training step on this CPU (issue 21, item 2).

What it measures, in one process at `--threads` intra-op threads (2: the training benchmark's setting):

1. GEMM peak: the fp32 FLOP/s of `torch.matmul` at the training step's own matrix products. One
   forward+backward is recorded (every `aten::mm` / `aten::addmm`, with its layer and operand layout): the
   linear layers' forward (tokens x in) @ (in x out) products (LLM attention projections and MLP, LM head,
   ViT layers, projector) and the backward dX / dW products of the trainable ones. Each distinct shape runs
   sustained for `--gemm-seconds`, best of `--repeats`; the peak is the best shape. A 1024^3 product is shown
   for reference only.
2. MFU at LLM hidden 128 and 256: the built-in `easy-vqa-tiny` config with the LLM width scaled (everything
   else kept) trains its finetune stage, as `bench_train.py` does: vlmlab's `Trainer`, and a plain PyTorch
   loop, on the same batches (the Trainer's own seeded order), interleaved. FLOPs of the timed steps are
   counted on those very batches with `torch.utils.flop_counter.FlopCounterMode` (forward + backward; the CPU
   SDPA kernels, missing from its registry, count 2 batched products forward and 4 backward: model FLOPs,
   no recompute). Steps are timed as the Trainer's StepLoop times them (all but the first 3, data loading
   included); each step's fastest try is kept. MFU = achieved FLOP/s / GEMM peak.
3. Where the time goes: torch.profiler (CPU) over steady steps of the plain loop, each step labelled in phases
   (data, forward, backward, clip, optimizer). Top ops by self CPU time, and the step split into GEMM /
   attention / other aten ops (elementwise, norms, copies) / Python + autograd engine / clipping / optimizer /
   data, beside the time the step's GEMMs take at their standalone rates from (1).
4. Cheap fixes tried outside src/ on the plain loop at `--fix-hidden`, same batches, interleaved: AdamW
   `foreach=True` and `fused=True` (the default on CPU is a Python for-loop over the tensors), the other
   thread count, a warm image cache (as after vision pretraining in a full run), and with `--compile`
   (minutes of compilation) `torch.compile` of the model.
5. Markdown tables for benchmarks/RESULTS.md, with the machine, versions and the exact command.

The LLM is built with `init: random` at both widths (the weights' values do not change the time, and no
256-wide rung is pretrained), with the tokenizer of the cached pretrained llama2-tiny rung when there is one,
so the sequences are the demo's (without it, a tokenizer fitted to the VQA texts; a note says so).

On a shared machine every figure is a best of interleaved tries, and the report says how many cores other
processes kept busy meanwhile; `--wait-idle S` waits up to S seconds before each try for idle cores.

Usage: python benchmarks/bench_mfu.py [--hidden 128 256] [--steps 9] [--repeats 3] [--threads 2]
       [--fix-hidden 256] [--no-fixes] [--compile] [--wait-idle 0]
The default run takes about 3 minutes on 2 idle cores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from torch.utils.module_tracker import ModuleTracker

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

from vlmlab.cli import resolve_config_path  # noqa: E402
from vlmlab.config import RunConfig, load_config  # noqa: E402
from vlmlab.data.dataset import VQADataset  # noqa: E402
from vlmlab.data.order import stage_order  # noqa: E402
from vlmlab.data.sources import load_training_items  # noqa: E402
from vlmlab.models.build import build_model  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402
from vlmlab.registry import LLM_BACKBONES  # noqa: E402
from vlmlab.train.optim import apply_stage_freezing, build_optimizer  # noqa: E402
from vlmlab.train.trainer import Trainer, tokenizer_texts  # noqa: E402
from vlmlab.training_step import StepLoop  # noqa: E402

load_builtin_parts()
aten = torch.ops.aten
WARMUP = 3  # the Trainer's StepLoop times the steps after its first 3; the plain loop does the same


def step_times(ends: list[float]) -> list[float]:
    """Durations of the timed steps from the end times of all steps (a step ends where the next one starts)."""
    return [b - a for a, b in zip(ends[WARMUP - 1 :], ends[WARMUP:])]


@contextlib.contextmanager
def step_ends(ends: list[float]):
    """Append the end time of every step vlmlab's StepLoop (the Trainer's loop) runs; nothing else changes."""
    original = StepLoop.run

    def run(loop, step_fn):
        def timed(step):
            out = step_fn(step)
            ends.append(time.perf_counter())
            return out

        return original(loop, timed)

    StepLoop.run = run
    try:
        yield
    finally:
        StepLoop.run = original


# ----- configs ---------------------------------------------------------------------------------------------------
def cached_rung_tokenizer(cfg: RunConfig) -> Path | None:
    """The directory of the config's cached pretrained LLM rung (its tokenizer), or None when not built here."""
    cls = LLM_BACKBONES.get(cfg.model.llm.id)
    params = cfg.model.llm.params
    if not hasattr(cls, "pretrained_backbone") or getattr(params, "init", None) != "pretrained":
        return None
    from vlmlab.lm.corpus import load_corpus
    from vlmlab.lm.pretrain import backbone_dir

    path = backbone_dir(cls.part_id, params.architecture(), params.pretrain, load_corpus(params.pretrain.corpus))
    return path if (path / "tokenizer.json").is_file() else None


def bench_config(name: str, hidden: int, steps: int, tokenizer: Path | None) -> RunConfig:
    """`name` with the LLM `hidden` wide (random init) and only its last (finetune) stage, `steps` steps long."""
    overrides: dict = {"model.llm.hidden_size": hidden, "model.llm.init": "random"}
    if tokenizer is not None:
        overrides["model.llm.tokenizer_path"] = str(tokenizer)
    cfg = load_config(resolve_config_path(name), overrides)
    stage = cfg.train.stages[-1].model_copy(update={"max_steps": steps})
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"stages": [stage]})})


# ----- FLOPs and GEMM shapes of one step -----------------------------------------------------------------------
def _sdpa_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)  # dQ, dK, dV, dP: no recompute (model FLOPs)


CPU_SDPA_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
}

# (pattern on the module path, layer kind) - the first match names a product
LAYER_KINDS = [
    (r"vision\..*attention\.([qkvo]_proj|attention\.(query|key|value)|output\.dense)$", "ViT attention proj"),
    (r"vision\..*(mlp\.fc1|intermediate\.dense)$", "ViT MLP up"),
    (r"vision\..*(mlp\.fc2|output\.dense)$", "ViT MLP down"),
    (r"vision\.", "ViT other"),
    (r"projector\.", "projector"),
    (r"self_attn\.[qkvo]_proj$", "LLM attention proj"),
    (r"mlp\.(gate|up)_proj$", "LLM MLP gate/up"),
    (r"mlp\.down_proj$", "LLM MLP down"),
    (r"lm_head$", "LM head"),
]


def layer_kind(path: str) -> str:
    return next((kind for pattern, kind in LAYER_KINDS if re.search(pattern, path)), path.split(".")[-1] or "other")


def _layout(t: torch.Tensor) -> str:
    """'N': row-major, 'T': a transposed view of a row-major tensor (what BLAS gets as a transpose flag)."""
    if t.is_contiguous():
        return "N"
    return "T" if t.t().is_contiguous() else "S"


@dataclass(frozen=True)
class Gemm:
    m: int
    k: int
    n: int
    layout: str  # of A and B, e.g. "NT" for x @ W.t()

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


@dataclass
class GemmCall:
    gemm: Gemm
    kind: str  # layer kind
    role: str  # fwd, dX, dW


class GemmRecorder(TorchDispatchMode):
    """Every mm/addmm of the code it runs around, with its layer kind and role (forward, dX or dW)."""

    def __init__(self, tracker: ModuleTracker):
        super().__init__()
        self.tracker = tracker
        self.calls: list[GemmCall] = []
        self.forward_kind: dict[tuple[int, int, int], str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            path = max(self.tracker.parents, key=lambda p: p.count("."), default="Global")
            gemm = Gemm(a.shape[0], a.shape[1], b.shape[1], _layout(a) + _layout(b))
            kind = layer_kind(path)
            if not self.tracker.is_bw:
                role = "fwd"
                self.forward_kind[(gemm.m, gemm.k, gemm.n)] = kind
            else:  # dW = grad_out.t() @ x (A transposed, K = tokens); dX = grad_out @ W. The tracker's module
                # is not reliable in backward: the layer is the one whose forward had the matching shape
                role = "dW" if gemm.layout[0] == "T" else "dX"
                fwd = (gemm.k, gemm.n, gemm.m) if role == "dW" else (gemm.m, gemm.n, gemm.k)
                kind = self.forward_kind.get(fwd, kind)
            self.calls.append(GemmCall(gemm, kind, role))
        return func(*args, **(kwargs or {}))


def forward_backward(model, batch) -> None:
    model(**batch.model_inputs(), labels=batch.labels).loss.backward()


def count_flops(model, batches, params) -> list[int]:
    """Forward+backward FLOPs of each batch (the optimizer's few are not model FLOPs); gradients are dropped."""
    out = []
    for batch in batches:
        with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
            forward_backward(model, batch)
        out.append(counter.get_total_flops())
        for p in params:
            p.grad = None
    return out


def record_gemms(model, batch, params) -> list[GemmCall]:
    tracker = ModuleTracker()
    with tracker, GemmRecorder(tracker) as rec:
        forward_backward(model, batch)
    for p in params:
        p.grad = None
    return rec.calls


def _operand(rows: int, cols: int, layout: str) -> torch.Tensor:
    return torch.randn(rows, cols) if layout != "T" else torch.randn(cols, rows).t()


def gemm_rate(g: Gemm, seconds: float) -> float:
    """Sustained FLOP/s of torch.matmul at this shape and layout for about `seconds` (one try)."""
    a, b = _operand(g.m, g.k, g.layout[0]), _operand(g.k, g.n, g.layout[1])
    out = torch.empty(g.m, g.n)
    for _ in range(3):
        torch.matmul(a, b, out=out)
    chunk = max(1, int(2e7 / g.flops))  # ~ a few hundred microseconds between clock reads
    iters, t0 = 0, time.perf_counter()
    while True:
        for _ in range(chunk):
            torch.matmul(a, b, out=out)
        iters += chunk
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return g.flops * iters / dt


@dataclass
class GemmRates:
    """Best FLOP/s per shape over rounds; the rounds are spread over the run, so one quiet moment is enough."""

    shapes: list[Gemm]
    seconds: float
    best: dict[Gemm, float] = field(default_factory=lambda: defaultdict(float))
    rounds: int = 0

    def round(self) -> None:
        def run() -> None:
            for g in self.shapes:
                self.best[g] = max(self.best[g], gemm_rate(g, self.seconds))

        monitored(run)
        self.rounds += 1


# ----- the two training loops ------------------------------------------------------------------------------------
@dataclass
class Bench:
    """One config (one LLM width): the plain loop's model and optimizer, and the batches the Trainer sees."""

    cfg: RunConfig
    items: list
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    timed_flops: list[int] = field(default_factory=list)  # per timed step
    gemms: list[GemmCall] = field(default_factory=list)  # of the first timed step

    @classmethod
    def build(cls, cfg: RunConfig) -> Bench:
        items = load_training_items(cfg)
        model = build_model(cfg, texts=tokenizer_texts(items)).train()
        stage = cfg.train.stages[0]
        apply_stage_freezing(model, stage)
        params = [p for p in model.parameters() if p.requires_grad]
        return cls(cfg, items, model, params, build_optimizer(model, stage, cfg.train))

    @property
    def steps(self) -> int:
        return self.cfg.train.stages[0].max_steps

    def dataset(self) -> VQADataset:
        """A fresh dataset (cold image cache), as the Trainer builds one per run."""
        m = self.model
        return VQADataset(self.items, m.llm, self.cfg.data.image, m.num_image_tokens, with_answers=True)

    def loader(self, data: VQADataset) -> torch.utils.data.DataLoader:
        order, _ = stage_order(self.cfg, 0, len(data))  # the Trainer's order for this stage
        return torch.utils.data.DataLoader(data, batch_sampler=order, collate_fn=data.collate)

    def timed_batches(self) -> list:
        return [b for i, b in enumerate(self.loader(self.dataset())) if i >= WARMUP]

    def count(self) -> None:
        batches = self.timed_batches()
        self.timed_flops = count_flops(self.model, batches, self.params)
        self.gemms = record_gemms(self.model, batches[0], self.params)

    def plain_steps(
        self,
        optimizer: torch.optim.Optimizer | None = None,
        model: Callable | None = None,
        warm_images: bool = False,
        phases: bool = False,
        profiler=None,
        steps: int | None = None,
    ) -> list[float]:
        """Seconds of each timed step of the shortest correct PyTorch loop (data loading included, as in the
        Trainer's StepLoop). `phases` labels data/forward/backward/clip/optimizer for the profiler, which (if
        given) runs over the timed steps only."""
        opt = optimizer if optimizer is not None else self.optimizer
        fwd = model if model is not None else self.model
        data = self.dataset()
        if warm_images:
            for it in data.items:
                data.image_array(it.image)
        label = record_function if phases else lambda name: contextlib.nullcontext()
        batches = iter(self.loader(data))
        ends = []
        for step in range(steps or self.steps):
            if step == WARMUP and profiler is not None:
                profiler.start()
            with label("phase:data"):
                batch = next(batches)
            with label("phase:forward"):
                loss = fwd(**batch.model_inputs(), labels=batch.labels).loss
            with label("phase:backward"):
                loss.backward()
            with label("phase:clip"):
                torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
            with label("phase:optimizer"):
                opt.step()
                opt.zero_grad(set_to_none=True)
            ends.append(time.perf_counter())
        if profiler is not None:
            profiler.stop()
        return step_times(ends)

    def vlmlab_steps(self) -> list[float]:
        """Seconds of each timed step of vlmlab's Trainer on the stage (a fresh model and run dir each time)."""
        ends: list[float] = []
        with tempfile.TemporaryDirectory() as tmp, step_ends(ends):
            result = Trainer(self.cfg, Path(tmp) / "run").run_training()
        times = step_times(ends)
        own = self.cfg.train.batch_size / result.samples_per_s  # the Trainer's own figure: the same window
        if abs(own - sum(times) / len(times)) > 0.05 * own:
            print(
                f"note: Trainer says {own * 1e3:.0f} ms/step, timed {sum(times) / len(times) * 1e3:.0f}",
                file=sys.stderr,
            )
        return times

    def optimizer_variant(self, **options) -> torch.optim.Optimizer:
        """build_optimizer's groups (lr, weight decay) in an AdamW with other implementation options."""
        keep = ("params", "lr", "initial_lr", "weight_decay", "name")
        groups = [{k: g[k] for k in keep} for g in self.optimizer.param_groups]
        return torch.optim.AdamW(groups, betas=self.cfg.train.betas, **options)


# ----- profile ---------------------------------------------------------------------------------------------------
PHASES = ("phase:data", "phase:forward", "phase:backward", "phase:clip", "phase:optimizer")
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution")


PYTHON = "Python + autograd engine (time outside aten ops)"
PHASE_CATEGORY = {
    "phase:data": "data (DataLoader, collate, image decode)",
    "phase:clip": "grad-norm clipping",
    "phase:optimizer": "optimizer (AdamW step, zero_grad)",
}


def op_category(name: str) -> str:
    if name in GEMM_OPS:
        return "GEMM"
    if "scaled_dot_product" in name:
        return "attention (SDPA)"
    if name.startswith("aten::"):
        return "other aten ops (elementwise, norms, copies, loss)"
    return PYTHON


def phase_of(event) -> str | None:
    while event is not None:
        if event.name in PHASES:
            return event.name
        event = event.cpu_parent
    return None


@dataclass
class Profile:
    step_ms: float
    split: dict[str, float]  # category -> ms per step
    top: list[tuple[str, float, float]]  # (op, self ms per step, calls per step)


def profile_plain(bench: Bench, steps: int) -> Profile:
    """Profile `steps` steady-state steps of the plain loop (the profiler starts after its WARMUP steps)."""
    prof = profile(activities=[ProfilerActivity.CPU])
    times = bench.plain_steps(phases=True, profiler=prof, steps=WARMUP + steps)
    return summarize(prof, steps, sum(times) / len(times))


def summarize(prof, steps: int, step_s: float) -> Profile:
    """The step split by category (ms per step) and the top ops by self CPU time."""
    split: dict[str, float] = defaultdict(float)
    attributed = 0.0
    for e in prof.events():
        ms = e.self_cpu_time_total / 1e3 / steps
        phase = phase_of(e)
        if phase is None:
            continue
        attributed += ms
        if phase in PHASE_CATEGORY:
            split[PHASE_CATEGORY[phase]] += ms
        elif e.name in PHASES:  # time in a forward/backward phase outside every op: Python
            split[PYTHON] += ms
        else:
            split[op_category(e.name)] += ms
    split[PYTHON] += max(0.0, step_s * 1e3 - attributed)  # the loop around the phases
    top = []
    for avg in sorted(prof.key_averages(), key=lambda a: -a.self_cpu_time_total):
        if avg.key in PHASES:
            continue
        top.append((avg.key, avg.self_cpu_time_total / 1e3 / steps, avg.count / steps))
        if len(top) == 12:
            break
    return Profile(step_s * 1e3, dict(split), top)


# ----- report ----------------------------------------------------------------------------------------------------
def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def gflops(x: float) -> str:
    return f"{x / 1e9:.1f}"


def fmt_range(xs: list[float]) -> str:
    xs = [x for x in xs if x == x]
    return f"{min(xs):.1f}-{max(xs):.1f} (mean {sum(xs) / len(xs):.1f})" if xs else "an unknown share"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Tries:
    """Per-step seconds of repeated tries over the same batches. The estimate takes, for every step, its fastest
    try (a shared machine's bursts of load hit single steps), and averages over the steps."""

    runs: list[list[float]] = field(default_factory=list)

    @property
    def best(self) -> float:
        return sum(min(col) for col in zip(*self.runs)) / len(self.runs[0])

    def spread(self) -> str:
        """Each try's mean ms/step."""
        return ", ".join(f"{sum(r) / len(r) * 1e3:.0f}" for r in self.runs)


def cpu_seconds() -> tuple[float, float, float] | None:
    """(wall clock, CPU seconds busy on the whole machine, CPU seconds of this process), or None without /proc."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return time.perf_counter(), busy / os.sysconf("SC_CLK_TCK"), time.process_time()


def others_cores(before, after) -> float:
    """CPU cores other processes kept busy between two `cpu_seconds()` readings."""
    if before is None or after is None or after[0] <= before[0]:
        return float("nan")
    return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / (after[0] - before[0])


def wait_until_idle(max_s: float, window_s: float = 0.5, threshold: float = 0.25) -> None:
    """Wait (at most `max_s`) until other processes use under `threshold` cores for `window_s`."""
    deadline = time.perf_counter() + max_s
    while time.perf_counter() < deadline:
        before = cpu_seconds()
        time.sleep(window_s)
        if not others_cores(before, cpu_seconds()) >= threshold:  # nan (no /proc) counts as idle
            return


OTHERS: list[float] = []  # cores used by other processes during each try
WAIT_IDLE_S = 0.0  # --wait-idle


def interleaved(variants: dict[str, Callable[[], list[float]]], repeats: int) -> dict[str, Tries]:
    """`repeats` rounds, each running every variant once."""
    tries: dict[str, Tries] = defaultdict(Tries)
    for _ in range(repeats):
        for name, run in variants.items():
            tries[name].runs.append(monitored(run))
    return dict(tries)


def monitored(run: Callable):
    """`run()`, after waiting for idle cores (--wait-idle), noting how busy other processes kept the machine."""
    if WAIT_IDLE_S:
        wait_until_idle(WAIT_IDLE_S)
    before = cpu_seconds()
    out = run()
    OTHERS.append(others_cores(before, cpu_seconds()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="easy-vqa-tiny")
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 256], help="LLM widths to measure")
    ap.add_argument("--steps", type=int, default=9, help=f"steps per try (the first {WARMUP} are not timed)")
    ap.add_argument("--repeats", type=int, default=3, help="tries per figure; the fastest per step is kept")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemm-seconds", type=float, default=0.1, help="sustained time per GEMM shape per try")
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--fix-hidden", type=int, default=256, help="LLM width the fixes are tried at")
    ap.add_argument("--no-fixes", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile (minutes of compilation)")
    ap.add_argument(
        "--wait-idle", type=float, default=0.0, help="before each try, wait up to this many seconds for idle cores"
    )
    args = ap.parse_args()
    global WAIT_IDLE_S
    WAIT_IDLE_S = args.wait_idle
    if args.steps <= WARMUP or args.profile_steps > args.steps - WARMUP:
        ap.error(f"need --steps > {WARMUP} and --profile-steps <= --steps - {WARMUP}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    command = "python benchmarks/bench_mfu.py" + "".join(f" {a}" for a in sys.argv[1:])
    say = lambda msg: print(f"[{time.perf_counter() - started:5.0f}s] {msg}", file=sys.stderr, flush=True)

    tokenizer = cached_rung_tokenizer(load_config(resolve_config_path(args.config)))
    if tokenizer is None:
        say("note: the cached LLM rung is missing; its tokenizer is replaced by one fitted to the VQA texts")
    hiddens = list(dict.fromkeys(args.hidden + ([] if args.no_fixes else [args.fix_hidden])))
    benches: dict[int, Bench] = {}
    for h in hiddens:
        say(f"hidden {h}: building, counting the FLOPs of the timed steps and recording their GEMMs")
        benches[h] = bench = Bench.build(bench_config(args.config, h, args.steps, tokenizer))
        bench.count()

    # 1. GEMM peak at the step's own shapes: rounds at the start and between the other measurements
    where: dict[Gemm, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for h, bench in benches.items():
        for call in bench.gemms:
            where[call.gemm][f"{call.kind} {call.role}"].add(h)
    gemm = GemmRates([*where, REFERENCE], args.gemm_seconds)
    say(f"GEMM rates at {len(where)} shapes")
    for _ in range(max(1, args.repeats - 1)):
        gemm.round()

    # 2. MFU: vlmlab's Trainer and the plain loop, interleaved
    mfu: dict[int, dict[str, Tries]] = {}
    for h in args.hidden:
        say(f"hidden {h}: plain loop and vlmlab Trainer, {args.repeats} interleaved tries of {args.steps} steps")
        bench = benches[h]
        mfu[h] = interleaved({"plain": bench.plain_steps, "vlmlab": bench.vlmlab_steps}, args.repeats)
        gemm.round()

    # 3. profiles of the plain loop (the fastest of two is kept)
    profiles: dict[int, Profile] = {}
    for h in args.hidden:
        say(f"hidden {h}: profiling {args.profile_steps} steps")
        bench = benches[h]
        tries = [monitored(lambda b=bench: profile_plain(b, args.profile_steps)) for _ in range(2)]
        profiles[h] = min(tries, key=lambda p: p.step_ms)

    # 4. cheap fixes, on the plain loop
    fixes: dict[str, Tries] = {}
    if not args.no_fixes:
        say(f"hidden {args.fix_hidden}: cheap fixes, {args.repeats} interleaved tries")
        fixes = interleaved(fix_variants(benches[args.fix_hidden], args, say), args.repeats)
    gemm.round()
    say("done")
    report(args, command, benches, where, gemm, mfu, profiles, fixes)


def fix_variants(bench: Bench, args, say) -> dict[str, Callable[[], list[float]]]:
    foreach = bench.optimizer_variant(foreach=True)
    fused = bench.optimizer_variant(fused=True)

    def threads(n: int) -> list[float]:
        torch.set_num_threads(n)
        try:
            return bench.plain_steps()
        finally:
            torch.set_num_threads(args.threads)

    variants = {
        BASELINE: bench.plain_steps,
        "AdamW(foreach=True)": lambda: bench.plain_steps(foreach),
        "AdamW(fused=True)": lambda: bench.plain_steps(fused),
        f"torch.set_num_threads({1 if args.threads > 1 else 2})": lambda: threads(1 if args.threads > 1 else 2),
        "image cache warm (as after vision-pretrain)": lambda: bench.plain_steps(warm_images=True),
    }
    if args.compile:
        compiled = torch.compile(bench.model, dynamic=True)
        say("torch.compile: compiling (one untimed pass over the batches)")
        bench.plain_steps(model=compiled)
        variants["torch.compile(model, dynamic=True)"] = lambda: bench.plain_steps(model=compiled)
        variants["torch.compile + AdamW(fused=True)"] = lambda: bench.plain_steps(fused, model=compiled)
    return variants


BASELINE = "baseline, as vlmlab (AdamW default: a for-loop over tensors on CPU)"
REFERENCE = Gemm(1024, 1024, 1024, "NN")


def report(args, command, benches, where, gemm, mfu, profiles, fixes) -> None:
    rates = gemm.best
    peak_gemm = max(where, key=lambda g: rates[g])
    peak = rates[peak_gemm]
    hs = args.hidden
    print("## MFU of the training step on this machine (issue 21, `benchmarks/bench_mfu.py`)\n")
    print(
        f"Machine: {machine()}, torch {torch.__version__} (MKL {torch.backends.mkl.is_available()}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), {args.threads} threads. Date: {datetime.date.today().isoformat()}. "
        f"Other processes kept {fmt_range(OTHERS)} of the {os.cpu_count()} cores busy during the tries (0 = a quiet "
        "machine; each figure is the fastest try, so the quietest moments count).  "
        f"\nCommand: `{command}`\n"
    )
    busy = [x for x in OTHERS if x == x]
    if busy and sum(busy) / len(busy) > 0.3:
        print(
            "**The machine was busy during this run**: the figures are lower bounds (rerun with `--wait-idle 30` "
            "when it is quieter).\n"
        )
    print(
        f"### fp32 GEMM peak: torch.matmul at the training step's shapes (best of {gemm.rounds} rounds of "
        f"{gemm.seconds:g} s per shape, spread over the run)\n"
    )
    rows = []
    for g in sorted(where, key=lambda g: -rates[g]):
        used = "; ".join(f"{k} (h{','.join(map(str, sorted(h)))})" for k, h in sorted(where[g].items()))
        rows.append([f"{g.m} x {g.k} x {g.n}", g.layout, used, gflops(rates[g])])
    ref = REFERENCE
    rows.append([f"{ref.m} x {ref.k} x {ref.n}", ref.layout, "reference, not in the model", gflops(rates[ref])])
    print(table(["m x k x n", "layout (A, B)", "layer, role (LLM width)", "GFLOP/s"], rows))
    g = peak_gemm
    print(f"\n**GEMM peak: {gflops(peak)} GFLOP/s** ({g.m} x {g.k} x {g.n}); the MFU below is relative to it.\n")

    batch = benches[hs[0]].cfg.train.batch_size
    print(
        f"### MFU per LLM width (finetune stage, batch {batch}, {args.steps - WARMUP} timed steps per try, "
        f"{args.repeats} interleaved tries)\n"
    )
    rows = []
    for h in hs:
        bench, tries = benches[h], mfu[h]
        flops = sum(bench.timed_flops) / len(bench.timed_flops)
        llm = sum(p.numel() for p in bench.model.llm.parameters())
        gemm_ms = sum(c.gemm.flops / rates[c.gemm] for c in bench.gemms) * 1e3
        for name in ("plain", "vlmlab"):
            t = tries[name].best
            rows.append(
                [
                    h,
                    f"{llm / 1e6:.2f}M",
                    f"{flops / 1e9:.1f}",
                    f"{gemm_ms:.0f}",
                    "plain PyTorch" if name == "plain" else "vlmlab Trainer",
                    f"{t * 1e3:.0f} ({tries[name].spread()})",
                    gflops(flops / t),
                    f"**{flops / t / peak:.1%}**",
                    "" if name == "plain" else f"{tries['plain'].best / t:.2f}",
                ]
            )
    header = ["LLM hidden", "LLM params", "GFLOP/step", "GEMM ms/step at peak-table rates", "loop"]
    header += ["ms/step (tries' means)", "GFLOP/s", "MFU", "vlmlab / plain speed"]
    print(table(header, rows))
    print(
        "\nGFLOP/step: forward + backward, mean over the timed steps (optimizer FLOPs not counted). ms/step: each "
        "step's fastest try, averaged. GEMM ms/step: the step's GEMMs at their standalone rates from the table "
        "above - the floor if everything else were free.\n"
    )

    print(f"### Where a step's time goes (plain loop, torch.profiler CPU, {args.profile_steps} steady steps)\n")
    cats = sorted({c for p in profiles.values() for c in p.split}, key=lambda c: -profiles[hs[-1]].split.get(c, 0))
    rows = [
        [c]
        + [
            f"{profiles[h].split.get(c, 0.0):.1f} ({profiles[h].split.get(c, 0.0) / profiles[h].step_ms:.0%})"
            for h in hs
        ]
        for c in cats
    ]
    rows.append(["**step, profiled**"] + [f"{profiles[h].step_ms:.0f}" for h in hs])
    rows.append(
        ["*for comparison: the GEMMs at their standalone rates*"]
        + [f"{sum(c.gemm.flops / rates[c.gemm] for c in benches[h].gemms) * 1e3:.1f}" for h in hs]
    )
    print(table(["category"] + [f"hidden {h}: ms/step (%)" for h in hs], rows))
    for h in hs:
        p = profiles[h]
        print(f"\nTop ops by self CPU time, hidden {h}:\n")
        rows = [[f"`{n}`", f"{ms:.1f}", f"{ms / p.step_ms:.0%}", f"{c:.0f}"] for n, ms, c in p.top]
        print(table(["op", "self ms/step", "% of step", "calls/step"], rows))

    if fixes:
        bench = benches[args.fix_hidden]
        flops = sum(bench.timed_flops) / len(bench.timed_flops)
        base = fixes[BASELINE].best
        print(
            f"\n### Cheap fixes tried outside src/ (plain loop, LLM hidden {args.fix_hidden}, {args.repeats} "
            "interleaved tries)\n"
        )
        rows = [
            [name, f"{t.best * 1e3:.0f} ({t.spread()})", f"{flops / t.best / peak:.1%}", f"{base / t.best - 1:+.1%}"]
            for name, t in fixes.items()
        ]
        print(table(["variant", "ms/step (tries' means)", "MFU", "speed vs baseline"], rows))


if __name__ == "__main__":
    main()
