"""One prepared command for the checks that need a GPU (issue 21 item 3); `--dry-run` runs them all tiny on CPU.

Checks (each skippable with `--only`, each under its own time limit, a failure in one is reported and the
next one runs):

1. **selective scan: CUDA kernel vs pure PyTorch.** With mamba-ssm installed, `selective_scan(backend='auto')`
   must pick its kernel for CUDA tensors (counted by wrapping the kernel while a VMamba tower runs), and
   `backend='cuda'` must equal `backend='torch'`: forward output and the gradients with respect to every input
   (u, delta, A, B, C, D, z, delta_bias) at a VMamba SS2D shape (b 2, 4 x 192 channels, 56 x 56 tokens, N 16,
   grouped B/C) and a Mamba/Vim shape (B/C shared, gate z), in fp32 and bf16. Error = max |x - y| / max |y|;
   tolerances: fp32 1e-4 (output) and 1e-3 (gradients), bf16 2e-2 and 5e-2. Both backends' outputs are also
   compared with the fp64 token-by-token `selective_scan_reference`, and fwd+bwd is timed. Without mamba-ssm the
   check says "kernel not installed" and still compares the torch path on the GPU with the reference.
   `--install-mamba` first runs `pip install --no-build-isolation MAMBA_SPEC` (never by default). The GPU machine
   reaches no package registry, and mamba-ssm on PyPI is a source package whose CUDA build takes longer than this
   script's budget: carry a prebuilt wheel and give it as `--mamba-spec PATH.whl`.
   Dry run: backend 'torch' against the reference (output and gradients), and 'auto' must not pick a kernel.
2. **VMamba in bf16 autocast vs fp32.** Two identical `vmamba` towers (same init, same batches) train in lockstep
   for `--ssm-steps` steps (default 300) to classify shapes-world scenes rendered in memory (object count, largest
   object's shape and colour; `scene_labels`), AdamW with vlmlab's warmup + cosine schedule, gradients clipped at
   1.0; a non-finite step is skipped and counted. Reported per precision: loss curve summary, final loss (mean of
   the last 10% of steps), non-finite steps, max gradient norm (before clipping), steps/s. Paper B's release keeps
   VMamba in fp32 for stability; the verdict line says whether bf16 diverged (any non-finite step, or a final loss
   above 1.5 x fp32's + 0.05).
3. **DPVR decode step at the LLaVA-1.5-7B shape.** A VLM with a CLIP ViT-L/14-336-shaped tower (576 vision
   tokens), the gelu-mlp projector and a LLaMA decoder of 32 layers x 4096 (11008 MLP, 32 heads, vocabulary
   32000), random bf16 weights, prompts of shapes-world questions (batch `--n-probe`, default 16, left-padded).
   For full, FastV (K 2, R 0.5) and DPVR (k 18): vlmlab's own `measure.cost.latency` (the number `vlmlab bench
   routing` reports; DPVR was 1.23x full there on an H100, FastV 0.99x), then per decode step: wall time, the
   time to enqueue it (CPU) before the GPU is waited for, and a torch.profiler window (CPU + CUDA) that gives
   kernels, kernel launches, synchronisations and top-level aten ops per step, the top kernels and ops by CUDA
   time, and DPVR's and FastV's per-op differences from full. Enqueue time close to wall time means the step is
   bound by the CPU (launch overhead), not by the GPU. Chrome traces of full's and DPVR's steps go to --out
   (`--no-trace` to skip).
   The weights are built directly on the GPU (`build_model` under `torch.device('cuda')` with bf16 as the default
   dtype) instead of `bench_routing_scale.py`'s export -> widen -> save -> import-llava -> load: that path writes
   and reads 13.5 GB three times (minutes of the ~10 available), and the decoder modules, routing strategies
   and the measured decode loop are the same either way. `--layers` (and `--hidden`, `--ffn`, `--heads`) shrink it.
4. **Batched greedy generation throughput, vlmlab vs transformers.** The same model (full routing) is converted
   with vlmlab's export code (`interop.llava_export.to_llava`, in memory: the weights `vlmlab export --format
   hf-llava` would write) into a `LlavaForConditionalGeneration` on the GPU. For batch 16 and 64
   (`--gen-batches`): `evaluation.generate.greedy_generate` (what `vlmlab eval` runs per batch) and
   `LlavaForConditionalGeneration.generate` (greedy, left padding) on the same collated inputs, `--max-new-tokens`
   (default 16) tokens, items/s (median of 2 timed runs after a warm-up), and whether every row's generated token
   ids are identical (first differing row/step reported otherwise).
5. **The 7B-shape finetune step (issue 19 (c)).** LLaVA-1.5-7B's finetune stage at its real shape with random
   weights: the model of checks 3-4 (taken over and cast to fp32 when they ran, else built in fp32), trained the
   way `train.stages.SequenceTraining` does it: `apply_stage_freezing` + `build_optimizer` for a `finetune` stage
   (projector and LLM at lr 2e-5, the CLIP tower frozen, weight decay 0, LLaVA's recipe),
   `enable_gradient_checkpointing`, the trainer's accelerate `Accelerator` in bf16 (autocast over fp32 weights) and
   `TrainingStep` (token-mean loss, clip 1.0, non-finite guard, torch's AdamW: foreach on CUDA). Rows are real
   `VQADataset` collations: multi-turn shapes-world conversations (576 vision + ~250 text tokens, left-padded).
   For micro-batch 4 and 8 (`--ft-batches`; a size that runs out of memory is reported and larger ones skipped):
   step time (median of 5 after 2 warm-up), samples/s, tokens/s, achieved TFLOP/s and MFU against 989 TFLOP/s
   (bf16 dense, H100 SXM = H200), peak memory (`max_memory_allocated`: whole step, and forward+backward alone)
   next to vlmlab's own pre-flight estimate (`models.footprint.stage_footprint`). FLOPs are counted analytically:
   8 x N_trainable x T (forward 2, backward 4, the checkpointed layers' forward again 2; T = non-padding tokens,
   N = LLM + projector = 6.76B) + 2 x N_tower x 577 x images (frozen tower, forward only); embeddings (no
   FLOPs) and the LM head (run on answer tokens only) make this ~4% high, attention's T^2 terms ~3% low, and
   `FlopCounterMode` counts one step as the cross-check. `MFU 6N` leaves the recompute out (PaLM's model FLOPs).
   One step per size runs under torch.profiler (CPU + CUDA, no trace file): CUDA kernel time by category (GEMM /
   attention / elementwise+norm / optimizer = everything in `TrainingStep.update` / other), by phase (forward /
   backward+recompute / optimizer), top ops and kernels, and kernel time over the unprofiled step time (GPU busy
   well under 100% means the step waits on the CPU). One GPU, no FSDP/ZeRO: sharding would only divide the
   optimizer state and weights across devices and add communication; one device gives the compute-bound MFU.
   Memory (estimated): 6.76B x (4 weight + 4 gradient + 8 AdamW) B = 101 GiB + 1.1 GiB tower, plus the
   foreach AdamW's fp32 temporary (sqrt of v for the ~6.7B-parameter group: ~25 GiB) at the update, ~127 GiB
   (vlmlab's pre-flight says 103 GiB at micro-batch 4, 105 at 8: it leaves that temporary out);
   activations with checkpointing are ~0.4 GiB per row (fp32 layer inputs) plus one layer's recompute, so both
   sizes should fit in 139 GiB. If the update does not fit, the check retries with `foreach=False` (no
   temporary), then with only the LLM's last half of the layers trained, and says so in its headline.

Run (GPU machine, from the repository root; vlmlab and its dependencies must import there, e.g. carried wheels):
    python benchmarks/gpu_checks.py --out DIR          # DIR defaults to $OUT, else ./gpu-checks
    python benchmarks/gpu_checks.py --only 1,3 --layers 16
    python benchmarks/gpu_checks.py --only 5 --ft-batches 4,8,16
Here (CPU, tiny shapes, about 15 s on 2 cores):
    python benchmarks/gpu_checks.py --dry-run --out /tmp/gpu-checks

Writes gpu_checks.json and gpu_checks.md (rewritten after every check, so a killed run keeps what finished),
gpu_checks.log (everything printed) and, for check 3, trace_full.json / trace_dpvr.json into the output folder
(five files; check 5's profile goes into the summaries only: a 7B training step's trace is far too large).

Expected GPU runtime (H200; estimated, not yet measured): about 3 minutes in all, plus ~15 s of imports and CUDA
start-up. The estimate counts the ops each check dispatches (profiled on CPU at the GPU shapes) at ~10 us of host
time per op, since at these sizes eager PyTorch is launch-bound, plus the arithmetic and memory traffic where
they dominate (bf16 at ~0.6 PFLOP/s, HBM at ~4 TB/s):
- check 1 ~15 s: the fp64 reference dispatches ~17 ops per token (53k at 3,136 tokens), ~140k ops over the four
  case/dtype pairs; the torch scan's fwd+bwd is ~2.6k ops, timed 4 times per backend;
- check 2 ~40 s: ~3.5k ops per fwd+bwd step of the 4.1M-parameter tower, two towers, 300 steps;
- check 3 ~45 s: building 7B random bf16 weights on the GPU (~15-20 s); ~1.8k top-level ops per decode step at 32
  layers (~20 ms, launch-bound: the GPU needs ~4.5 ms to read 13.5 GB of weights and the KV cache), ~115 decode
  steps and 12 prefills of 16 x ~615 tokens (~0.2 s each), and reading three profiles;
- check 4 ~30 s: a second 7B copy for transformers, then 3 generations per library and batch size (16 new tokens;
  a batch-64 prefill is ~0.5 PFLOP, ~1 s);
- check 5 ~30 s after checks 3-4 (~50 s alone: building 7B fp32 weights ~20 s): a step is ~180 TFLOP at
  micro-batch 4 (8 x 6.76B x ~3.3k tokens; 360 at 8), ~0.4 s / ~0.8 s at 45% MFU, plus the AdamW update over
  6.76B fp32 parameters (~270 GB of HBM traffic, ~70 ms); 9 steps per size (2 warm-up, 5 timed, one FLOP-counted,
  one profiled) ~4 s + ~7 s, and reading each profile (~40k events) ~5 s.
Every check is capped (`--limits`, default 45,90,110,75,150 s) and the whole run by `--budget-s` (default 420 s):
a check whose time is up is stopped and reported as `timeout`, and the next one still runs if budget is left.
Checks 1-4 at their caps (320 s) still leave check 5 ~80 s. Check 5 also watches its own clock: it skips a
micro-batch size, the FLOP count or the profile that would not finish, and keeps what finished on a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

import torch  # noqa: E402

# ----- settings --------------------------------------------------------------------------------------------

# (GPU value, dry-run value) of every size knob
SIZES = {
    # check 1: (b, channels, length, d_state, groups of B/C or 0 for shared (b, n, l), with gate z)
    "scan_cases": (
        {"ss2d": (2, 4 * 192, 56 * 56, 16, 4, False), "mamba": (2, 1024, 1024, 16, 0, True)},
        {"ss2d": (2, 4 * 3, 37, 4, 4, False), "mamba": (2, 6, 29, 4, 0, True)},
    ),
    # check 2
    "ssm_image": (64, 32),
    "ssm_images": (4096, 48),
    "ssm_batch": (64, 8),
    "ssm_tower": (
        {"patch_size": 4, "hidden_size": 64, "depths": [2, 2, 4], "tap_stage": 3, "d_state": 16},
        {"patch_size": 4, "hidden_size": 16, "depths": [1, 1], "tap_stage": 2, "d_state": 4},
    ),
    # checks 3 and 4
    "vision": (
        {"patch_size": 14, "hidden_size": 1024, "num_layers": 24, "num_heads": 16, "mlp_ratio": 4.0},
        {"patch_size": 14, "hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_ratio": 2.0},
    ),
    "image_size": (336, 112),
    "llm": (
        {"layers": 32, "hidden": 4096, "ffn": 11008, "heads": 32, "vocab": 32000},
        {"layers": 4, "hidden": 64, "ffn": 176, "heads": 4, "vocab": 1000},
    ),
    "n_probe": (16, 4),
    "decode_steps": ((3, 8, 2), (1, 3, 2)),  # (warm-up, timed, profiled) decode steps after one prefill
    "latency_repeats": ((3, 8), (1, 2)),  # vlmlab's measure.cost.latency: (repeats, decode_tokens)
    "gen_batches": ("16,64", "2,4"),
    "max_new_tokens": (16, 5),
    "gen_repeats": (2, 1),
    # check 5
    "ft_batches": ("4,8", "2,4"),
    "ft_text_tokens": (250, 80),
    "ft_steps": ((2, 5), (1, 2)),  # (warm-up, timed) steps per micro-batch size
    "limits": ("45,90,110,75,150", "60,60,90,90,90"),
    "ssm_steps": (300, 20),
    "budget_s": (420.0, 150.0),
}

SCAN_TOLERANCE = {"float32": (1e-4, 1e-3), "bfloat16": (2e-2, 5e-2)}  # (output, gradients): max|x-y| / max|y|
QUESTION_SUFFIX = "\nAnswer the question using a single word or phrase."  # LLaVA-1.5's short-answer prompt
CHECKS = {
    1: "selective scan kernel",
    2: "VMamba bf16 vs fp32",
    3: "DPVR decode profile",
    4: "generation throughput",
    5: "7B finetune step",
}
USES_VLM = {3, 4, 5}  # the checks that share the LLaVA-shaped model (`vlm_7b`)


def size(name: str, dry: bool):
    return SIZES[name][1 if dry else 0]


# ----- output ------------------------------------------------------------------------------------------------


class Log:
    """print() that also appends to OUT/gpu_checks.log, flushed line by line."""

    def __init__(self, path: Path):
        self.fh = path.open("a", encoding="utf-8")

    def __call__(self, *parts) -> None:
        text = " ".join(str(p) for p in parts)
        print(text, flush=True)
        self.fh.write(text + "\n")
        self.fh.flush()


class Report:
    """The JSON + Markdown summary, rewritten after every check."""

    def __init__(self, out: Path, env: dict, args: dict):
        self.out, self.env, self.args = out, env, args
        self.checks: dict[str, dict] = {}

    def set(self, number: int, record: dict) -> None:
        self.checks[str(number)] = record
        self.save()

    def save(self) -> None:
        data = {"env": self.env, "args": self.args, "checks": self.checks}
        (self.out / "gpu_checks.json").write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
        (self.out / "gpu_checks.md").write_text(self.markdown(), encoding="utf-8")

    def markdown(self) -> str:
        env = self.env
        lines = [
            "# GPU checks (benchmarks/gpu_checks.py)",
            "",
            f"- device: {env.get('device')} ({'dry run, tiny shapes' if self.args.get('dry_run') else 'full shapes'})",
            f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, transformers {env.get('transformers')}, "
            f"mamba-ssm {env.get('mamba_ssm')}, python {env.get('python')}",
            f"- vlmlab commit {env.get('commit')}; started {env.get('started')}",
            "",
            "| check | status | seconds | headline |",
            "|---|---|---|---|",
        ]
        for number, rec in self.checks.items():
            lines.append(
                f"| {number}. {CHECKS[int(number)]} | {rec.get('status')} | {rec.get('seconds', 0):.1f} | "
                f"{rec.get('headline', '')} |"
            )
        for number, rec in self.checks.items():
            lines += ["", f"## {number}. {CHECKS[int(number)]}: {rec.get('status')}", ""]
            if rec.get("error"):
                lines += ["```", rec["error"].rstrip(), "```"]
            for line in rec.get("details", []):
                lines.append(line)
        return "\n".join(lines) + "\n"


# ----- time limits -------------------------------------------------------------------------------------------


class CheckTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise CheckTimeout in the main thread after `seconds` (checked between Python bytecodes: a CUDA call
    in flight finishes first)."""

    def fire(signum, frame):
        raise CheckTimeout(f"time limit of {seconds:.0f} s reached")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` (device synchronised around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----- environment -------------------------------------------------------------------------------------------


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def install_mamba(spec: str, timeout: float, log: Log) -> dict:
    """pip install mamba-ssm (only with --install-mamba): from PyPI it compiles CUDA code, so give a wheel."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", spec]
    log(f"installing mamba-ssm: {' '.join(cmd)} (timeout {timeout:.0f} s)")
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        ok = done.returncode == 0
        tail = (done.stdout + done.stderr)[-1500:]
    except (subprocess.TimeoutExpired, OSError) as exc:
        ok, tail = False, str(exc)
    log(f"pip install {'succeeded' if ok else 'FAILED'} in {time.perf_counter() - t0:.0f} s")
    if not ok:
        log(tail)
    return {"spec": spec, "ok": ok, "seconds": time.perf_counter() - t0, "output_tail": tail}


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": package_version("transformers"),
        "mamba_ssm": package_version("mamba-ssm"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }
    try:
        env["commit"] = (
            subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown (no git checkout)"
        )
    except (OSError, subprocess.TimeoutExpired):
        env["commit"] = "unknown"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["multiprocessors"] = props.multi_processor_count
    return env


# ----- check 1: selective scan -------------------------------------------------------------------------------


def scan_inputs(case, dtype: torch.dtype, device: torch.device, seed: int) -> dict[str, torch.Tensor | None]:
    """Inputs in the models' dtypes: activations (u, delta, B, C, z) in `dtype`, parameters (A, D, delta_bias)
    in fp32, as under autocast; delta_bias as Mamba initialises it (softplus ~ 1e-3..1e-1)."""
    b, d, length, n, groups, gate = case
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    bc_shape = (b, groups, n, length) if groups else (b, n, length)
    dt = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return {
        "u": rnd(b, d, length).to(dtype),
        "delta": rnd(b, d, length, scale=0.5).to(dtype),
        "A": -(torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1) * (0.5 + torch.rand(d, 1, generator=g))).to(
            device
        ),
        "B": rnd(*bc_shape).to(dtype),
        "C": rnd(*bc_shape).to(dtype),
        "D": rnd(d),
        "z": rnd(b, d, length).to(dtype) if gate else None,
        "delta_bias": (dt + torch.log(-torch.expm1(-dt))).to(device),
    }


def scan_run(fn, inputs: dict, grad_out: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """fn(**inputs) on fresh leaf copies; returns the output and (with grad_out) every input's gradient."""
    leaves = {
        k: None if v is None else v.detach().clone().requires_grad_(grad_out is not None) for k, v in inputs.items()
    }
    with torch.set_grad_enabled(grad_out is not None):
        y = fn(**leaves)
        if grad_out is None:
            return y.detach(), {}
        y.backward(grad_out.to(y.dtype))
    return y.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return float((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def check_scan(ctx) -> dict:
    from vlmlab.models.vision import selective_scan as ss

    log, device, dry = ctx.log, ctx.device, ctx.dry
    available = ss.cuda_kernel_available()
    on_gpu = device.type == "cuda"
    kernel = on_gpu and available
    details, failures = [], []
    log(f"mamba-ssm {package_version('mamba-ssm')}; cuda_kernel_available() = {available}")
    if on_gpu and not available:
        log("kernel not installed: comparing the torch path on the GPU with the fp64 reference only")

    # does `auto` pick the kernel inside a model? count kernel calls while a VMamba tower runs
    calls = [0]
    original = ss._cuda_selective_scan
    if original is not None:

        def counting(*a, **k):
            calls[0] += 1
            return original(*a, **k)

        ss._cuda_selective_scan = counting
    try:
        from vlmlab.models.vision.ssm import VMambaEncoder

        tower = VMambaEncoder.build(VMambaEncoder.Params(hidden_size=16, depths=[1], tap_stage=1), image_size=32)
        with torch.no_grad():
            tower.to(device)(torch.randn(2, 3, 32, 32, device=device))
    finally:
        ss._cuda_selective_scan = original
    selected = calls[0] > 0
    line = f"backend 'auto' in a VMamba tower on {device.type}: kernel {'selected' if selected else 'not selected'}"
    line += f" ({calls[0]} calls; expected {'selected' if kernel else 'not selected'})"
    log(line)
    details.append(f"- {line}")
    if selected != kernel:
        failures.append("auto selection")

    rows = []
    for case_name, case in size("scan_cases", dry).items():
        for dtype in (torch.float32, torch.bfloat16):
            name = str(dtype).removeprefix("torch.")
            tol_out, tol_grad = SCAN_TOLERANCE[name]
            inputs = scan_inputs(case, dtype, device, seed=ctx.seed)
            grad_out = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(1)).to(device)
            y_torch, g_torch = scan_run(lambda **kw: ss.selective_scan(**kw, backend="torch"), inputs, grad_out)
            # the fp64 reference loops over tokens: output only at the GPU shapes, gradients too when tiny
            with_ref_grads = dry
            y_ref, g_ref = scan_run(ss.selective_scan_reference, inputs, grad_out if with_ref_grads else None)
            row = {"case": case_name, "dtype": name, "shape": list(case[:4]), "torch_vs_ref": rel_err(y_torch, y_ref)}
            if with_ref_grads:
                row["torch_vs_ref_grads"] = {k: rel_err(g_torch[k], g_ref[k]) for k in g_torch}
            if row["torch_vs_ref"] > tol_out or any(v > tol_grad for v in row.get("torch_vs_ref_grads", {}).values()):
                failures.append(f"{case_name}/{name} torch vs reference")
            if kernel:
                y_cuda, g_cuda = scan_run(lambda **kw: ss.selective_scan(**kw, backend="cuda"), inputs, grad_out)
                row["cuda_vs_ref"] = rel_err(y_cuda, y_ref)
                row["cuda_vs_torch"] = rel_err(y_cuda, y_torch)
                row["cuda_vs_torch_grads"] = {k: rel_err(g_cuda[k], g_torch[k]) for k in g_torch}
                worst = max(row["cuda_vs_torch_grads"].values())
                if row["cuda_vs_torch"] > tol_out or worst > tol_grad:
                    failures.append(f"{case_name}/{name} cuda vs torch")
            for backend in ("torch", "cuda") if kernel else ("torch",):

                def fwd_bwd(b=backend, x=inputs, dy=grad_out):
                    return scan_run(lambda **kw: ss.selective_scan(**kw, backend=b), x, dy)

                row[f"{backend}_fwd_bwd_ms"] = 1000 * timed(fwd_bwd, device, repeats=1 if dry else 3)
            rows.append(row)
            text = f"{case_name:5s} {name:8s} b,d,l,n={tuple(case[:4])}: torch vs fp64 ref {row['torch_vs_ref']:.2e}"
            if "torch_vs_ref_grads" in row:
                text += f" (grads max {max(row['torch_vs_ref_grads'].values()):.2e})"
            if kernel:
                text += (
                    f"; cuda vs torch {row['cuda_vs_torch']:.2e} (grads max {worst:.2e}: "
                    + ", ".join(f"{k} {v:.1e}" for k, v in row["cuda_vs_torch_grads"].items())
                    + f"); cuda vs ref {row['cuda_vs_ref']:.2e}"
                )
            text += f"; fwd+bwd torch {row['torch_fwd_bwd_ms']:.1f} ms"
            if kernel:
                text += f", cuda {row['cuda_fwd_bwd_ms']:.1f} ms"
            text += f"  [tolerance {tol_out:g} / {tol_grad:g}]"
            log(text)
            details.append(f"- {text}")
            del inputs, y_torch, g_torch, y_ref, g_ref
            free_memory()
    if failures:
        status = "fail"
    elif on_gpu and not available:
        status = "kernel not installed"
    else:
        status = "pass"
    if kernel:
        headline = "kernel selected by auto and equal to torch within tolerance" if not failures else "mismatch"
    elif on_gpu:
        headline = "kernel not installed; torch path matches fp64 reference" if not failures else "torch path off"
    else:
        headline = "torch path matches fp64 reference (CPU)" if not failures else "torch path off"
    return {
        "status": status,
        "headline": headline + (f" ({', '.join(failures)})" if failures else ""),
        "kernel_available": available,
        "kernel_selected_by_auto": selected,
        "tolerances": SCAN_TOLERANCE,
        "cases": rows,
        "details": details,
    }


# ----- check 2: VMamba bf16 vs fp32 --------------------------------------------------------------------------


def shapes_scenes(n: int, image: int, seed: int):
    """n shapes-world scenes rendered in memory: uint8 images (n, s, s, 3) and labels (n, 3) with -100 unknown
    (count; largest object's shape and colour, unknown when two objects tie)."""
    import numpy as np

    from vlmlab.data import shapes_world as sw

    images = np.empty((n, image, image, 3), dtype=np.uint8)
    labels = np.full((n, 3), -100, dtype=np.int64)
    for i in range(n):
        objects = sw.sample_objects(np.random.default_rng([seed, 0, i]), image)
        images[i] = sw.render(objects, image)
        lab = sw.scene_labels(objects)
        labels[i, 0] = int(lab["count"]) - 1
        if "largest_shape" in lab:
            labels[i, 1] = sw.SHAPES.index(lab["largest_shape"])
            labels[i, 2] = sw.COLORS.index(lab["largest_color"])
    return images, labels, (sw.MAX_OBJECTS, len(sw.SHAPES), len(sw.COLORS))


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the known labels (-100 = unknown); 0 for a batch with none (never NaN)."""
    import torch.nn.functional as F

    known = target != -100
    total = F.cross_entropy(logits, target.clamp_min(0), reduction="none") * known
    return total.sum() / known.sum().clamp_min(1)


def window_mean(values: list[float], lo: int, hi: int) -> float:
    chunk = [v for v in values[lo:hi] if math.isfinite(v)]
    return sum(chunk) / len(chunk) if chunk else float("nan")


def check_vmamba_precision(ctx) -> dict:
    import numpy as np
    from torch import nn

    from vlmlab.data.images import normalize
    from vlmlab.models.vision.ssm import VMambaEncoder
    from vlmlab.training_step import schedule

    log, device, dry = ctx.log, ctx.device, ctx.dry
    steps, batch, image = ctx.args.ssm_steps, size("ssm_batch", dry), size("ssm_image", dry)
    t0 = time.perf_counter()
    images, labels, n_classes = shapes_scenes(size("ssm_images", dry), image, ctx.seed)
    log(f"{len(images)} shapes-world scenes at {image} px rendered in {time.perf_counter() - t0:.1f} s")
    x_all = torch.from_numpy(normalize(images, (0.5,) * 3, (0.5,) * 3)).to(device)
    y_all = torch.from_numpy(labels).to(device)
    params = VMambaEncoder.Params(**size("ssm_tower", dry))

    class Run:
        def __init__(self, name: str):
            torch.manual_seed(ctx.seed)
            self.name = name
            self.tower = VMambaEncoder.build(params, image_size=image).to(device).train()
            self.heads = nn.ModuleList(nn.Linear(self.tower.embed_dim, c) for c in n_classes).to(device)
            self.params = [*self.tower.parameters(), *self.heads.parameters()]
            self.opt = torch.optim.AdamW(self.params, lr=ctx.args.ssm_lr, weight_decay=0.01, betas=(0.9, 0.98))
            self.losses: list[float] = []
            self.grad_norms: list[float] = []
            self.skipped = 0
            self.correct = self.seen = 0
            self.seconds = 0.0

    runs = [Run("fp32"), Run("bf16")]
    n_params = sum(p.numel() for p in runs[0].tower.parameters())
    factor = schedule("cosine", max(1, steps // 20), steps)
    gen = torch.Generator().manual_seed(ctx.seed)
    per_epoch, orders = len(images) // batch, {}

    def batch_indices(step: int) -> torch.Tensor:
        epoch, k = divmod(step, per_epoch)
        if epoch not in orders:  # a new permutation each epoch, the same for both precisions
            orders[epoch] = torch.randperm(len(images), generator=gen)
        return orders[epoch][k * batch : (k + 1) * batch].to(device)

    log(
        f"vmamba {params.model_dump()} ({n_params / 1e6:.2f}M parameters, {runs[0].tower.num_tokens} tokens out), "
        f"batch {batch}, {steps} steps, lr {ctx.args.ssm_lr:g} (warmup + cosine), clip 1.0"
    )
    # both precisions stop at the same step if time runs out
    deadline = time.perf_counter() + max(0.8 * ctx.limit, ctx.limit - 15) - (time.perf_counter() - t0)
    done = 0
    for step in range(steps):
        if time.perf_counter() > deadline:
            log(f"stopping at step {step}: time limit near")
            break
        idx = batch_indices(step)
        x, y = x_all[idx], y_all[idx]
        for run in runs:
            s0 = time.perf_counter()
            for group in run.opt.param_groups:
                group["lr"] = ctx.args.ssm_lr * factor(step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.name == "bf16"):
                pooled = run.tower(x).tokens.mean(1)
                logits = [head(pooled).float() for head in run.heads]
            loss = sum(masked_cross_entropy(lg, y[:, j]) for j, lg in enumerate(logits))
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(run.params, 1.0)
            loss_v, norm_v = float(loss.detach()), float(norm)
            if math.isfinite(loss_v) and math.isfinite(norm_v):
                run.opt.step()
            else:
                run.skipped += 1
            run.opt.zero_grad(set_to_none=True)
            run.losses.append(loss_v)
            run.grad_norms.append(norm_v)
            if step >= steps - max(1, steps // 10):
                run.correct += int((logits[0].argmax(1) == y[:, 0]).sum())
                run.seen += len(idx)
            sync(device)
            run.seconds += time.perf_counter() - s0
        done = step + 1
        if done % max(1, steps // 6) == 0 or done == steps:
            log(
                f"step {done:4d}: "
                + "  ".join(
                    f"{r.name} loss {window_mean(r.losses, done - max(1, steps // 6), done):.3f} "
                    f"|g| {r.grad_norms[-1]:.2f}"
                    for r in runs
                )
            )
    if not done:
        raise CheckTimeout("no training step finished within the time limit")
    tail = max(1, done // 10)
    summary = {}
    for run in runs:
        finite_norms = [g for g in run.grad_norms if math.isfinite(g)]
        marks = np.linspace(0, done, 11).astype(int)
        summary[run.name] = {
            "steps": done,
            "steps_per_s": done / run.seconds if run.seconds else None,
            "first_loss": window_mean(run.losses, 0, tail),
            "final_loss": window_mean(run.losses, done - tail, done),
            "min_loss": min((v for v in run.losses if math.isfinite(v)), default=float("nan")),
            "nonfinite_steps": run.skipped,
            "max_grad_norm": max(finite_norms, default=float("nan")),
            "final_grad_norm": window_mean(run.grad_norms, done - tail, done),
            "final_count_accuracy": run.correct / run.seen if run.seen else None,
            "curve_deciles": [window_mean(run.losses, a, b) for a, b in zip(marks[:-1], marks[1:]) if b > a],
            "losses": [round(v, 5) for v in run.losses],
            "grad_norms": [round(v, 4) for v in run.grad_norms],
        }
    fp32, bf16 = summary["fp32"], summary["bf16"]
    diverged = bf16["nonfinite_steps"] > 0 or not bf16["final_loss"] <= 1.5 * fp32["final_loss"] + 0.05
    fp32_bad = fp32["nonfinite_steps"] > 0
    verdict = "bf16 DIVERGED" if diverged else "bf16 did not diverge"
    headline = (
        f"{verdict}: final loss bf16 {bf16['final_loss']:.3f} vs fp32 {fp32['final_loss']:.3f} after {done} steps; "
        f"non-finite steps {bf16['nonfinite_steps']}/{fp32['nonfinite_steps']}; max grad norm {bf16['max_grad_norm']:.2f}/"
        f"{fp32['max_grad_norm']:.2f}"
    )
    log(headline)
    details = [
        f"- tower {params.model_dump()}, {n_params / 1e6:.2f}M parameters; {len(images)} scenes at {image} px; "
        f"batch {batch}; AdamW lr {ctx.args.ssm_lr:g}, warmup + cosine, clip 1.0; same init and batches",
        "- divergence rule: any non-finite bf16 step, or bf16 final loss > 1.5 x fp32 final loss + 0.05",
        "",
        "| precision | steps/s | first loss | final loss | min loss | non-finite | max grad norm | count acc (last 10%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        acc = s["final_count_accuracy"]
        details.append(
            f"| {name} | {s['steps_per_s'] or 0:.2f} | {s['first_loss']:.3f} | {s['final_loss']:.3f} | "
            f"{s['min_loss']:.3f} | {s['nonfinite_steps']} | {s['max_grad_norm']:.2f} | "
            f"{'-' if acc is None else f'{acc:.3f}'} |"
        )
    details += ["", "Loss by tenth of the run:", ""]
    for name, s in summary.items():
        details.append(f"- {name}: " + ", ".join(f"{v:.3f}" for v in s["curve_deciles"]))
    status = "fail" if fp32_bad else "bf16 diverged" if diverged else "bf16 stable"
    for run in runs:
        del run.tower, run.heads, run.opt
    return {
        "status": status,
        "headline": headline,
        "bf16_diverged": diverged,
        "scan_backend": "cuda kernel" if device.type == "cuda" and _kernel_available() else "torch",
        "runs": summary,
        "details": details,
    }


def _kernel_available() -> bool:
    from vlmlab.models.vision.selective_scan import cuda_kernel_available

    return cuda_kernel_available()


# ----- checks 3 and 4: the LLaVA-1.5-7B-shaped VLM -----------------------------------------------------------


def saved_scenes(n: int, folder: Path, seed: int, stream: int):
    """(i, generator, objects, PNG path) of n shapes-world scenes drawn from stream `stream` of `seed` and
    saved into `folder`; the generator goes on to draw the scene's questions."""
    import numpy as np
    from PIL import Image

    from vlmlab.data import shapes_world as sw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng([seed, stream, i])
        objects = sw.sample_objects(rng, 64)
        path = folder / f"scene{i:04d}.png"
        Image.fromarray(sw.render(objects, 64)).save(path)
        yield i, rng, objects, path


def probe_items(n: int, folder: Path, seed: int):
    """n VQA items over shapes-world scenes saved as PNG (one question each, LLaVA's short-answer suffix)."""
    from vlmlab.data import shapes_world as sw
    from vlmlab.data.items import VQAItem

    items = []
    for i, rng, objects, path in saved_scenes(n, folder, seed, stream=2):
        questions = sw.scene_questions(rng, objects, 64)
        q = questions[i % len(questions)]
        items.append(
            VQAItem(f"{i}", "shapes-world", q["category"], q["question"] + QUESTION_SUFFIX, q["answer"], str(path))
        )
    return items


def vlm_raw_config(ctx) -> tuple[dict, dict, dict]:
    """The LLaVA-shaped VLM's config as plain data (checks 3-5): (raw config, LLM shape, vision tower)."""
    args, dry = ctx.args, ctx.dry
    shape = dict(size("llm", dry))
    for key in ("layers", "hidden", "ffn", "heads"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    vision = dict(size("vision", dry))
    if args.tiny_tower and not dry:
        vision = {"patch_size": 14, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "mlp_ratio": 4.0}
    raw = {
        "name": "gpu-checks",
        "seed": ctx.seed,
        "model": {
            "vision": {"id": "vit", "family": "clip", "feature_layer": -2, **vision},
            "projector": {"id": "gelu-mlp"},
            "llm": {
                "id": "llama2-tiny",
                "init": "random",
                "hidden_size": shape["hidden"],
                "num_layers": shape["layers"],
                "num_heads": shape["heads"],
                "intermediate_size": shape["ffn"],
                "vocab_size": shape["vocab"],
                "context": 4096,
            },
            "routing": {"id": "full"},
        },
        "data": {"train": {"task": "shapes-world", "split": "train"}, "image": {"size": size("image_size", dry)}},
    }
    return raw, shape, vision


def vlm_7b(ctx, dtype: torch.dtype = torch.bfloat16):
    """The LLaVA-shaped VLM (full routing, random weights in `dtype`), built once for checks 3 and 4 (check 5
    takes it over, or builds its own in fp32): (model, cfg, items, shape)."""
    if ctx.cache.get("vlm") is not None:
        return ctx.cache["vlm"]
    from vlmlab.config import config_from_dict
    from vlmlab.models.build import build_model

    args, dry, log = ctx.args, ctx.dry, ctx.log
    raw, shape, vision = vlm_raw_config(ctx)
    cfg = config_from_dict(raw)
    n_items = max([size("n_probe", dry) if args.n_probe is None else args.n_probe, *ctx.gen_batches])
    items = probe_items(n_items, ctx.work / "images", ctx.seed)
    texts = [it.question for it in items] + [it.answer for it in items]
    t0 = time.perf_counter()
    with torch.device(ctx.device), default_dtype(dtype):
        model = build_model(cfg, texts=texts).eval()
    sync(ctx.device)
    n = sum(p.numel() for p in model.parameters())
    log(
        f"built a random {str(dtype).removeprefix('torch.')} VLM on {ctx.device.type} in {time.perf_counter() - t0:.1f}"
        f" s: {n / 1e9:.2f}B parameters; LLM {shape['layers']} layers x {shape['hidden']} (MLP {shape['ffn']}, "
        f"{shape['heads']} heads, vocabulary {model.llm.lm.config.vocab_size}, attention "
        f"{model.llm.lm.config._attn_implementation}); vision {vision['num_layers']} x {vision['hidden_size']}, "
        f"{model.num_image_tokens} tokens"
    )
    ctx.cache["vlm"] = (model, cfg, items, shape)
    return ctx.cache["vlm"]


def collate(model, cfg, items, device):
    from vlmlab.data.dataset import VQADataset

    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    return data.collate([data[i] for i in range(len(data))]).to(device)


def decode_steps(model, routing, batch, n_warm: int, n_timed: int, n_prof: int, device, profiler_factory):
    """One prefill with a KV cache, then decode steps as `measure.cost.latency` runs them: per step wall seconds
    and enqueue seconds (before the device sync), then `n_prof` steps inside `profiler_factory()`."""
    from transformers import DynamicCache

    from vlmlab.models.vlm import position_ids_from_mask

    llm = model.llm
    model.routing = routing
    with torch.no_grad():
        embeds = model.embed(batch.input_ids, batch.image_mask, batch.pixel_values)
        cache = DynamicCache(config=llm.lm.config)
        mask = batch.attention_mask
        positions = position_ids_from_mask(mask)
        out = routing(llm, embeds, mask, positions, batch.image_mask, past_key_values=cache, use_cache=True)
        token = llm.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        state = {"mask": mask, "positions": positions, "token": token}

        def step():
            state["mask"] = torch.cat([state["mask"], torch.ones_like(state["mask"][:, :1])], dim=1)
            state["positions"] = state["positions"][:, -1:] + 1
            no_image = torch.zeros_like(state["mask"][:, -1:], dtype=torch.bool)
            o = routing(
                llm,
                llm.embed_tokens(state["token"][:, None]),
                state["mask"],
                state["positions"],
                no_image,
                past_key_values=cache,
                use_cache=True,
            )
            state["token"] = llm.lm_head(o.last_hidden_state[:, -1]).argmax(-1)

        for _ in range(n_warm):
            step()
        wall, enqueue = [], []
        for _ in range(n_timed):
            sync(device)
            t0 = time.perf_counter()
            step()
            t1 = time.perf_counter()
            sync(device)
            enqueue.append(t1 - t0)
            wall.append(time.perf_counter() - t0)
        prof = profiler_factory()
        with prof:
            for _ in range(n_prof):
                with torch.profiler.record_function("decode_step"):
                    step()
                sync(device)
    return statistics.median(wall), statistics.median(enqueue), prof


def profile_summary(prof, steps: int, on_gpu: bool) -> dict:
    """Per decode step: kernels, launches, syncs, top-level aten ops, GPU busy time; top kernels and ops."""
    from torch.autograd import DeviceType

    events = list(prof.events())
    device_events = [e for e in events if e.device_type == DeviceType.CUDA]
    cpu_events = [e for e in events if e.device_type == DeviceType.CPU]
    kernels = [e for e in device_events if not e.name.startswith(("Memcpy", "Memset"))]
    by_kernel: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for e in kernels:
        by_kernel[e.name][0] += 1
        by_kernel[e.name][1] += e.time_range.elapsed_us()
    top_level = [
        e
        for e in cpu_events
        if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
    ]
    op_counts: dict[str, int] = defaultdict(int)
    for e in top_level:
        op_counts[e.name] += 1
    ops = {}
    for avg in prof.key_averages():
        if avg.device_type != DeviceType.CPU or not avg.key.startswith("aten::"):
            continue
        ops[avg.key] = {
            "count": avg.count / steps,
            "top_level_count": op_counts.get(avg.key, 0) / steps,
            "self_cpu_us": avg.self_cpu_time_total / steps,
            "self_cuda_us": getattr(avg, "self_device_time_total", 0.0) / steps,
            "cuda_us": getattr(avg, "device_time_total", 0.0) / steps,
        }
    step_events = [e for e in cpu_events if e.name == "decode_step"]
    summary = {
        "steps": steps,
        "kernels_per_step": len(kernels) / steps,
        "memcpy_memset_per_step": (len(device_events) - len(kernels)) / steps,
        "gpu_kernel_ms_per_step": sum(e.time_range.elapsed_us() for e in kernels) / steps / 1000,
        "launch_calls_per_step": sum(1 for e in cpu_events if "LaunchKernel" in e.name) / steps,
        "sync_calls_per_step": sum(1 for e in cpu_events if e.name.endswith("Synchronize")) / steps,
        "memcpy_calls_per_step": sum(1 for e in cpu_events if e.name.startswith(("cudaMemcpy", "cuMemcpy"))) / steps,
        "top_level_aten_ops_per_step": len(top_level) / steps,
        "cpu_ms_per_step_profiled": statistics.mean(e.time_range.elapsed_us() for e in step_events) / 1000
        if step_events
        else None,
        "top_kernels": sorted(
            ({"name": k, "per_step": c / steps, "us_per_step": t / steps} for k, (c, t) in by_kernel.items()),
            key=lambda r: -r["us_per_step"],
        )[:15],
        "ops": ops,
    }
    sort_key = "self_cuda_us" if on_gpu else "self_cpu_us"
    summary["top_ops"] = sorted(({"name": k, **v} for k, v in ops.items()), key=lambda r: -r[sort_key])[:15]
    return summary


def short(name: str, width: int = 80) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def check_decode_profile(ctx) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from vlmlab.measure.cost import latency
    from vlmlab.registry import ROUTING

    log, device, dry, args = ctx.log, ctx.device, ctx.dry, ctx.args
    model, cfg, items, shape = vlm_7b(ctx)
    n_probe = size("n_probe", dry) if args.n_probe is None else args.n_probe
    batch = collate(model, cfg, items[:n_probe], device)
    text = float((batch.attention_mask.sum(1) - model.num_image_tokens).float().mean())
    layers = shape["layers"]
    dpvr_layer = args.dpvr_layer if args.dpvr_layer is not None else max(1, min(layers - 1, round(18 * layers / 32)))
    fastv_layer = min(args.fastv_layer, layers - 1)
    strategies = {
        "full": model.routing,
        "fastv": ROUTING.get("fastv").build(
            ROUTING.get("fastv").Params(layer=fastv_layer, ratio=args.fastv_ratio), llm=model.llm
        ),
        "dpvr": ROUTING.get("dpvr").build(ROUTING.get("dpvr").Params(layer=dpvr_layer), llm=model.llm),
    }
    for s in strategies.values():
        s.to(device).eval()
    log(
        f"batch {batch.input_ids.shape[0]} prompts x {batch.input_ids.shape[1]} tokens ({model.num_image_tokens} "
        f"vision + {text:.1f} text on average); fastv K={fastv_layer} R={args.fastv_ratio}, dpvr k={dpvr_layer}"
    )
    repeats, decode_tokens = size("latency_repeats", dry)
    n_warm, n_timed, n_prof = size("decode_steps", dry)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    latency(model, batch, decode_tokens=2, repeats=1)  # warm-up (cuBLAS, attention kernels): not charged to `full`
    results = {}
    for name, routing in strategies.items():
        model.routing = routing
        lat = latency(model, batch, decode_tokens=decode_tokens, repeats=repeats)
        wall, enqueue, prof = decode_steps(
            model, routing, batch, n_warm, n_timed, n_prof, device, lambda: profile(activities=activities)
        )
        summary = profile_summary(prof, n_prof, device.type == "cuda")
        summary.update(
            {
                "latency_prefill_s": lat["prefill_s"],
                "latency_decode_token_s": lat["decode_token_s"],
                "step_wall_ms": wall * 1000,
                "step_enqueue_ms": enqueue * 1000,
            }
        )
        if not args.no_trace and name in ("full", "dpvr"):
            path = ctx.out / f"trace_{name}.json"
            prof.export_chrome_trace(str(path))
            if path.stat().st_size > 15 * 2**20:
                path.unlink()
                summary["trace"] = "dropped (over 15 MiB)"
            else:
                summary["trace"] = path.name
        results[name] = summary
        log(
            f"{name:5s}: latency() prefill {lat['prefill_s'] * 1000:.1f} ms, decode step {lat['decode_token_s'] * 1000:.2f}"
            f" ms | own loop: wall {wall * 1000:.2f} ms, enqueue {enqueue * 1000:.2f} ms | per step: "
            f"{summary['kernels_per_step']:.0f} kernels ({summary['gpu_kernel_ms_per_step']:.2f} ms GPU), "
            f"{summary['launch_calls_per_step']:.0f} launches, {summary['sync_calls_per_step']:.0f} syncs, "
            f"{summary['memcpy_calls_per_step']:.0f} memcpy calls, {summary['top_level_aten_ops_per_step']:.0f} "
            "top-level aten ops"
        )
        del prof
        free_memory()
    model.routing = strategies["full"]
    base = results["full"]
    details = [
        f"- LLM {layers} layers x {shape['hidden']} (MLP {shape['ffn']}, {shape['heads']} heads), bf16, random weights;"
        f" batch {batch.input_ids.shape[0]}, {model.num_image_tokens} vision + {text:.1f} text tokens; fastv "
        f"K={fastv_layer} R={args.fastv_ratio}; dpvr k={dpvr_layer}",
        f"- `latency()`: {repeats} repeats x {decode_tokens} decode tokens; own loop: {n_timed} timed steps after "
        f"{n_warm} warm-up, {n_prof} profiled",
        "",
        "| strategy | prefill ms | decode ms (latency) | x full | step wall ms | enqueue ms | GPU kernel ms | kernels "
        "| launches | syncs | memcpy | aten ops |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ratio = r["latency_decode_token_s"] / base["latency_decode_token_s"]
        r["decode_over_full"] = ratio
        details.append(
            f"| {name} | {r['latency_prefill_s'] * 1000:.1f} | {r['latency_decode_token_s'] * 1000:.2f} | {ratio:.2f} | "
            f"{r['step_wall_ms']:.2f} | {r['step_enqueue_ms']:.2f} | {r['gpu_kernel_ms_per_step']:.2f} | "
            f"{r['kernels_per_step']:.0f} | {r['launch_calls_per_step']:.0f} | {r['sync_calls_per_step']:.0f} | "
            f"{r['memcpy_calls_per_step']:.0f} | {r['top_level_aten_ops_per_step']:.0f} |"
        )
    on_gpu = device.type == "cuda"
    unit, key = ("self CUDA us", "self_cuda_us") if on_gpu else ("self CPU us", "self_cpu_us")
    for name in ("full", "dpvr", "fastv"):
        r = results[name]
        section = []
        if on_gpu:
            section += [f"### {name}: top kernels by CUDA time per decode step", "", "| kernel | per step | us |"]
            section.append("|---|---|---|")
            section += [
                f"| `{short(k['name'])}` | {k['per_step']:.0f} | {k['us_per_step']:.1f} |" for k in r["top_kernels"]
            ]
            section.append("")
        section += [f"### {name}: top aten ops by {unit} per decode step", "", f"| op | calls | {unit} | self CPU us |"]
        section.append("|---|---|---|---|")
        section += [
            f"| `{o['name']}` | {o['count']:.0f} | {o[key]:.1f} | {o['self_cpu_us']:.1f} |" for o in r["top_ops"]
        ]
        details += ["", *section]
        if name != "fastv":  # printed for full and DPVR; FastV's tables are in the Markdown summary
            log("\n" + "\n".join(section))
    for name in ("dpvr", "fastv"):
        r = results[name]
        diffs = []
        for op in set(r["ops"]) | set(base["ops"]):
            a, b = r["ops"].get(op, {}), base["ops"].get(op, {})
            diffs.append(
                (
                    op,
                    a.get("count", 0) - b.get("count", 0),
                    a.get("self_cuda_us", 0) - b.get("self_cuda_us", 0),
                    a.get("self_cpu_us", 0) - b.get("self_cpu_us", 0),
                )
            )
        diffs.sort(key=lambda d: -(abs(d[2]) + abs(d[3]) + abs(d[1])))
        r["op_diff_vs_full"] = [
            {"op": d[0], "calls": d[1], "self_cuda_us": d[2], "self_cpu_us": d[3]} for d in diffs[:20]
        ]
        table = [
            f"### {name} minus full, per decode step (largest differences)",
            "",
            "| op | calls | self CUDA us | self CPU us |",
            "|---|---|---|---|",
            *(f"| `{d[0]}` | {d[1]:+.0f} | {d[2]:+.1f} | {d[3]:+.1f} |" for d in diffs[:12] if any(d[1:])),
        ]
        details += ["", *table]
        log("\n" + "\n".join(table))
    for r in results.values():
        r.pop("ops")  # the per-op tables above and op_diff_vs_full keep what matters; the JSON stays small
    d, f = results["dpvr"], results["fastv"]
    headline = (
        f"decode step x full: dpvr {d['decode_over_full']:.2f}, fastv {f['decode_over_full']:.2f}; per step dpvr/full: "
        f"{d['kernels_per_step']:.0f}/{base['kernels_per_step']:.0f} kernels, "
        f"{d['top_level_aten_ops_per_step']:.0f}/{base['top_level_aten_ops_per_step']:.0f} aten ops, enqueue "
        f"{d['step_enqueue_ms']:.1f}/{base['step_enqueue_ms']:.1f} ms of wall {d['step_wall_ms']:.1f}/"
        f"{base['step_wall_ms']:.1f} ms"
    )
    log(headline)
    del strategies
    return {"status": "done", "headline": headline, "strategies": results, "details": details}


def check_generation(ctx) -> dict:
    from vlmlab.evaluation.generate import greedy_generate
    from vlmlab.interop.llava_export import to_llava

    log, device, dry, args = ctx.log, ctx.device, ctx.dry, ctx.args
    model, cfg, items, shape = vlm_7b(ctx)
    from vlmlab.registry import ROUTING

    if type(model.routing) is not ROUTING.get("full"):
        raise RuntimeError("the shared model's routing is not `full`")
    t0 = time.perf_counter()
    with torch.device(device), default_dtype(torch.bfloat16):
        llava = to_llava(model, cfg).eval()
    sync(device)
    log(f"to_llava (vlmlab's hf-llava export, in memory) on {device.type}: {time.perf_counter() - t0:.1f} s")
    llm = model.llm
    new_tokens, repeats = args.max_new_tokens or size("max_new_tokens", dry), size("gen_repeats", dry)
    rows, details = [], []
    all_identical = True
    for bs in ctx.gen_batches:
        batch = collate(model, cfg, items[:bs], device)

        def run_vlmlab(b=batch):
            return greedy_generate(model, b, new_tokens)

        def run_hf(b=batch):
            out = llava.generate(
                input_ids=b.input_ids,
                attention_mask=b.attention_mask,
                pixel_values=b.pixel_values.to(torch.bfloat16),
                max_new_tokens=new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=llm.stop_token_id,
                pad_token_id=llm.pad_token_id,
            )
            return out[:, b.input_ids.shape[1] :]

        ours = run_vlmlab()
        theirs = run_hf()
        t_ours = timed(run_vlmlab, device, repeats, warmup=0)
        t_theirs = timed(run_hf, device, repeats, warmup=0)
        hf_ids = []
        for row in theirs.tolist():
            hf_ids.append(row[: row.index(llm.stop_token_id)] if llm.stop_token_id in row else row)
        same = [a == b for a, b in zip(ours.token_ids, hf_ids)]
        first = None
        for i, (a, b) in enumerate(zip(ours.token_ids, hf_ids)):
            if a != b:
                step = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                first = {"row": i, "step": step, "vlmlab": a[: step + 3], "transformers": b[: step + 3]}
                break
        all_identical &= all(same)
        generated = sum(len(t) for t in ours.token_ids)
        row = {
            "batch": bs,
            "new_tokens": new_tokens,
            "vlmlab_s": t_ours,
            "transformers_s": t_theirs,
            "vlmlab_items_per_s": bs / t_ours,
            "transformers_items_per_s": bs / t_theirs,
            "vlmlab_over_transformers": t_theirs / t_ours,
            "identical_rows": sum(same),
            "rows": len(same),
            "generated_tokens": generated,
            "first_difference": first,
            "prompt_tokens": int(batch.input_ids.shape[1]),
        }
        rows.append(row)
        log(
            f"batch {bs:3d}: vlmlab {bs / t_ours:7.2f} items/s ({t_ours:.2f} s), transformers {bs / t_theirs:7.2f} "
            f"items/s ({t_theirs:.2f} s), ratio {t_theirs / t_ours:.2f}; identical token ids {sum(same)}/{len(same)}"
            + (f"; first difference {first}" if first else "")
        )
        del batch, ours, theirs
        free_memory()
    llava = None  # the transformers copy goes before the next check (the closures above share this cell)
    free_memory()
    details += [
        f"- LLM {shape['layers']} layers x {shape['hidden']}, bf16, random weights; {new_tokens} new tokens, greedy; "
        f"median of {repeats} timed runs after a warm-up; transformers: `LlavaForConditionalGeneration.generate` on "
        "the weights `to_llava` gives (vlmlab's hf-llava export), same left-padded inputs",
        "",
        "| batch | vlmlab items/s | transformers items/s | vlmlab / transformers speed | identical rows |",
        "|---|---|---|---|---|",
    ]
    details += [
        f"| {r['batch']} | {r['vlmlab_items_per_s']:.2f} | {r['transformers_items_per_s']:.2f} | "
        f"{r['vlmlab_over_transformers']:.2f} | {r['identical_rows']}/{r['rows']} |"
        for r in rows
    ]
    headline = "; ".join(
        f"bs {r['batch']}: {r['vlmlab_items_per_s']:.1f} vs {r['transformers_items_per_s']:.1f} items/s "
        f"(vlmlab vs HF), ids identical {r['identical_rows']}/{r['rows']}"
        for r in rows
    )
    return {"status": "pass" if all_identical else "fail", "headline": headline, "batches": rows, "details": details}


# ----- check 5: the LLaVA-1.5-7B finetune step ----------------------------------------------------------------

PEAK_TFLOPS = 989.0  # bf16 dense, H100 SXM and H200
# LLaVA-1.5's finetune recipe in vlmlab's keys (projector + LLM at 2e-5, tower frozen); batch_size per micro-batch
FINETUNE_TRAIN = {
    "stages": [{"name": "finetune", "lr": {"projector": 2e-5, "llm": 2e-5}}],
    "weight_decay": 0.0,
    "warmup_ratio": 0.03,
    "schedule": "cosine",
    "max_grad_norm": 1.0,
    "mixed_precision": "bf16",
    "gradient_checkpointing": True,
}
GEMM_OPS = {
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::addbmm",
    "aten::matmul",
    "aten::linear",
    "aten::_scaled_mm",
    "aten::addmv",
    "aten::mv",
    "aten::convolution",
    "aten::_convolution",
    "aten::cudnn_convolution",
    "aten::convolution_backward",
}
OTHER_OP_WORDS = ("embedding", "index", "scatter", "gather", "nonzero", "masked", "nll_loss", "log_softmax", "cat")
OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def finetune_items(n: int, folder: Path, seed: int, data_for, image_tokens: int, text_tokens: int):
    """n multi-turn training conversations over shapes-world scenes, as LLaVA-665k's multi-turn records are:
    shapes-world questions (LLaVA's short-answer suffix) asked of one image, as many turns as bring the row's
    text tokens in the backbone's chat template closest to `text_tokens` (`data_for(items)` is the VQADataset
    that counts them)."""
    from vlmlab.data import shapes_world as sw
    from vlmlab.data.items import VQAItem

    items = []
    for i, rng, objects, path in saved_scenes(n, folder, seed, stream=5):
        turns: list[tuple[str, str]] = []
        category, item, length, previous = "", None, 0, (None, 0)
        while length < text_tokens and len(turns) < 200:
            previous = (item, length)
            questions = sw.scene_questions(rng, objects, 64)
            q = questions[len(turns) % len(questions)]
            category = category or q["category"]
            turns.append((q["question"] + QUESTION_SUFFIX, q["answer"]))
            item = VQAItem(f"ft{i}", "shapes-world", category, *turns[0], str(path), conversation=tuple(turns))
            length = data_for([item]).length(0) - image_tokens
        if previous[0] is not None and text_tokens - previous[1] < length - text_tokens:
            item = previous[0]  # one turn fewer is closer
        items.append(item)
    return items


def finetune_flops(model, batch, tower_positions: int) -> dict:
    """Analytic FLOPs of one training step: 8 x N x T for each trainable parameter (forward 2, backward 4,
    the checkpointed forward again 2), 6 x N x T for a frozen LLM/projector parameter the backward passes
    through (no weight gradient), 2 x N x positions per image for the frozen tower (forward only)."""
    tokens = int(batch.attention_mask.sum())
    images = int(batch.pixel_values.shape[0])
    train = sum(p.numel() for m in (model.llm, model.projector) for p in m.parameters() if p.requires_grad)
    frozen = sum(p.numel() for m in (model.llm, model.projector) for p in m.parameters() if not p.requires_grad)
    tower = sum(p.numel() for p in model.vision.parameters())
    total = 8 * train * tokens + 6 * frozen * tokens + 2 * tower * tower_positions * images
    return {
        "tokens": tokens,
        "padded_tokens": int(batch.input_ids.numel()),
        "images": images,
        "trainable_params": train,
        "frozen_llm_params": frozen,
        "tower_params": tower,
        "flops": total,
        "flops_6n": 6 * train * tokens + 4 * frozen * tokens + 2 * tower * tower_positions * images,
    }


def op_category(name: str) -> str:
    if name.startswith(("aten::_foreach", "aten::_fused_adam")):
        return "optimizer"
    if "attention" in name or "flash" in name or "sdpa" in name:
        return "attention"
    if name in GEMM_OPS or "convolution" in name:
        return "GEMM"
    if any(w in name for w in OTHER_OP_WORDS) or not name.startswith("aten::"):
        return "other"
    return "elementwise+norm"


def step_phase(event) -> str:
    """forward / optimizer (TrainingStep.update: clip, guard, AdamW, zero_grad) by the enclosing range; the
    rest is backward (with the checkpointed layers' recomputed forward), which runs on autograd's threads."""
    e = event.cpu_parent
    while e is not None:
        if e.name == "ft::forward":
            return "forward"
        if e.name == "ft::update":
            return "optimizer"
        e = e.cpu_parent
    return "backward+recompute"


def train_profile_summary(prof, on_gpu: bool, step_s: float) -> dict:
    """One profiled training step: time (CUDA kernel time on a GPU, self CPU time of aten ops on the CPU)
    by category (GEMM / attention / elementwise+norm / optimizer / other), by phase, the top ops and kernels."""
    from torch.autograd import DeviceType

    events = list(prof.events())
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    by_op: dict[tuple[str, str], list] = {}  # (op, category) -> [calls, us]
    categories: dict[str, float] = defaultdict(float)
    phases: dict[str, float] = defaultdict(float)
    for e in events:
        if e.device_type != DeviceType.CPU:
            continue
        if on_gpu:
            us = getattr(e, "self_device_time_total", 0.0)
        else:
            us = e.self_cpu_time_total if e.name.startswith("aten::") else 0.0
        if us <= 0:
            continue
        phase = step_phase(e)
        cat = "optimizer" if phase == "optimizer" else op_category(e.name)
        row = by_op.setdefault((e.name, cat), [0, 0.0])
        row[0] += 1
        row[1] += us
        categories[cat] += us
        phases[phase] += us
    total = sum(categories.values())
    kernel_us = sum(e.time_range.elapsed_us() for e in kernels)
    if on_gpu and kernel_us > total:  # kernels no aten op launched (memcpy/memset from the runtime)
        categories["other"] += kernel_us - total
        phases["unattributed"] = kernel_us - total
        total = kernel_us
    by_kernel: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for e in kernels:
        by_kernel[e.name][0] += 1
        by_kernel[e.name][1] += e.time_range.elapsed_us()
    pct = lambda us: 100 * us / total if total else 0.0  # noqa: E731
    return {
        "time": "CUDA kernel time" if on_gpu else "self CPU time of aten ops",
        "total_ms": total / 1000,
        "kernels": len(kernels),
        "gpu_busy_of_step": kernel_us / 1e6 / step_s if on_gpu and step_s else None,
        "categories": {
            k: {"ms": v / 1000, "percent": pct(v)} for k, v in sorted(categories.items(), key=lambda kv: -kv[1])
        },
        "phases": {k: {"ms": v / 1000, "percent": pct(v)} for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
        "top_ops": [
            {"name": k, "category": c, "calls": n, "ms": us / 1000, "percent": pct(us)}
            for (k, c), (n, us) in sorted(by_op.items(), key=lambda kv: -kv[1][1])[:15]
        ],
        "top_kernels": [
            {"name": k, "calls": n, "ms": us / 1000, "percent": pct(us)}
            for k, (n, us) in sorted(by_kernel.items(), key=lambda kv: -kv[1][1])[:8]
        ],
    }


def counted_flops(step) -> dict:
    """torch.utils.flop_counter's count of one training step (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    by_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for k, v in by_op.items() if "attention" in str(k))
    return {"flops": counter.get_total_flops(), "attention_flops": attention}


def check_finetune_step(ctx) -> dict:
    from torch.profiler import ProfilerActivity, profile, record_function

    from vlmlab.config import config_from_dict
    from vlmlab.data.dataset import IGNORE, VQADataset
    from vlmlab.distributed import all_sum
    from vlmlab.models.build import enable_gradient_checkpointing
    from vlmlab.models.footprint import stage_footprint
    from vlmlab.train import engines
    from vlmlab.train.optim import apply_stage_freezing, build_optimizer
    from vlmlab.train.trainer import _accelerator
    from vlmlab.training_step import Fault, NonFiniteGuard, TrainingStep, schedule

    log, device, dry, args = ctx.log, ctx.device, ctx.dry, ctx.args
    t_start = time.perf_counter()
    deadline = t_start + ctx.limit - 3
    on_gpu = device.type == "cuda"
    reused = ctx.cache.get("vlm") is not None
    model, _, _, shape = vlm_7b(ctx, dtype=torch.float32)
    ctx.cache.pop("vlm", None)  # trained from here on: no longer the checks 3-4 model
    if reused:  # checks 3-4's bf16 weights become fp32 master weights (the values do not matter here)
        model.float()
    raw, _, _ = vlm_raw_config(ctx)
    cfg = config_from_dict({**raw, "train": FINETUNE_TRAIN})
    stage = cfg.train.stages[0]
    checkpointed = enable_gradient_checkpointing(model)
    trainable_counts = apply_stage_freezing(model, stage)
    optimizer = build_optimizer(model, stage, cfg.train)
    acc = _accelerator(cfg.train.mixed_precision, [], ctx.work / "accelerate")
    batches = [int(b) for b in str(args.ft_batches or size("ft_batches", dry)).split(",") if b.strip()]
    n_warm, n_timed = size("ft_steps", dry)
    total_steps = len(batches) * (n_warm + n_timed + 2)
    wrapped = None
    try:
        wrapped, optimizer = acc.prepare(model, optimizer)
        wrapped.train()
        guard = NonFiniteGuard(policy="skip", max_skips=10**6)
        lr_factor = schedule(cfg.train.schedule, int(cfg.train.warmup_ratio * total_steps), total_steps)
        trainable = [p for p in model.parameters() if p.requires_grad]
        update = TrainingStep(optimizer, trainable, lr_factor, cfg.train.max_grad_norm, guard, acc)
        image_tokens = model.num_image_tokens
        text_tokens = args.ft_text_tokens or size("ft_text_tokens", dry)

        def data_for(items):
            return VQADataset(items, model.llm, cfg.data.image, image_tokens, with_answers=True)

        items = finetune_items(max(batches), ctx.work / "ft-images", ctx.seed, data_for, image_tokens, text_tokens)
        data = data_for(items)
        rows = [data[i] for i in range(len(data))]
        extent = data.extent()
        log(
            f"finetune: {sum(trainable_counts.values()) / 1e9:.3f}B trainable parameters "
            f"({', '.join(f'{g} {n / 1e6:.1f}M' for g, n in trainable_counts.items() if n)}), tower frozen; "
            f"gradient checkpointing in {', '.join(checkpointed) or 'nothing'}; {cfg.train.mixed_precision} autocast "
            f"through accelerate, fp32 master weights, AdamW groups {[g['name'] for g in optimizer.param_groups]}; "
            f"{len(items)} conversations of {image_tokens} vision + "
            f"{statistics.mean(len(r.ids) for r in rows) - image_tokens:.0f} text tokens on average "
            f"({statistics.mean(len(it.turns) for it in items):.1f} turns)"
        )
        counter = {"step": 0, "peak_fwd_bwd": 0, "peak_step": 0}

        def step(batch, trace_ranges: bool = False) -> float:
            """One optimizer step as SequenceTraining.one_step runs it (grad_accum 1, one process)."""
            rf = record_function if trace_ranges else lambda _: contextlib.nullcontext()
            update.begin(counter["step"])
            targets = max(all_sum(acc, int((batch.labels[:, 1:] != IGNORE).sum())), 1)
            if on_gpu:
                torch.cuda.reset_peak_memory_stats(device)
            b = batch.to(acc.device)
            with rf("ft::forward"), acc.autocast():
                out = wrapped(**b.model_inputs(), labels=b.labels)
            with rf("ft::backward"):
                update.backward(out.loss_sum, acc.num_processes / targets * engines.backward_scale(acc, 1))
            loss = float(out.loss_sum.detach()) / targets
            del out
            if on_gpu:
                counter["peak_fwd_bwd"] = max(counter["peak_fwd_bwd"], torch.cuda.max_memory_allocated(device))
            with rf("ft::update"):
                skipped = update.update(lambda: Fault(f"check 5 step {counter['step']}", "random weights"))
            if on_gpu:
                counter["peak_step"] = max(counter["peak_step"], torch.cuda.max_memory_allocated(device))
            counter["step"] += 1
            counter["skipped"] = counter.get("skipped", 0) + (skipped is not None)
            return loss

        def fall_back(level: int) -> str:
            """What fits when the full finetune does not: 1 = AdamW without foreach (no fp32 temporary the
            size of the LLM), 2 = also freeze the LLM's embeddings and first half of the layers."""
            optimizer.zero_grad(set_to_none=True)
            if level == 1:
                for g in optimizer.param_groups:
                    g["foreach"] = False
                return "full finetune, AdamW foreach=False (vlmlab's default foreach AdamW did not fit)"
            layers = model.llm.lm.model.layers
            keep = max(1, len(layers) // 2)
            frozen = [*model.llm.lm.model.embed_tokens.parameters()]
            frozen += [p for layer in layers[: len(layers) - keep] for p in layer.parameters()]
            for p in frozen:
                p.requires_grad_(False)
                optimizer.state.pop(p, None)
            update.params = [p for p in model.parameters() if p.requires_grad]
            return f"LLM's last {keep} of {len(layers)} layers + lm_head + projector (full finetune did not fit)"

        tower_positions = image_tokens + 1  # CLS + patches (577 at 336 px)
        results, notes = [], []
        mode = "full finetune (LLM + projector), vlmlab's AdamW (torch's default: foreach on CUDA)"
        level, status = 0, "done"
        queue = list(batches)
        while queue:
            mb = queue[0]
            est = results[-1]["step_s"] * mb / results[-1]["micro_batch"] if results else None
            left = deadline - time.perf_counter()
            if est is not None and left < (n_warm + n_timed + 1) * est + 5:
                notes.append(f"micro-batch {mb} skipped: {left:.0f} s left, ~{(n_warm + n_timed) * est:.0f} s needed")
                log(notes[-1])
                queue.pop(0)
                continue
            batch = data.collate(rows[:mb])
            flops = finetune_flops(model, batch, tower_positions)
            rec = {"micro_batch": mb, "mode": mode, **flops}
            counter.update(peak_fwd_bwd=0, peak_step=0)
            oom = None
            try:
                for _ in range(n_warm):
                    step(batch)
                times, losses = [], []
                for _ in range(n_timed):
                    sync(device)
                    t0 = time.perf_counter()
                    losses.append(step(batch))
                    sync(device)
                    times.append(time.perf_counter() - t0)
            except OOM_ERRORS as exc:
                oom = str(exc).strip().splitlines()[0][:300]
            except CheckTimeout as exc:
                notes.append(f"micro-batch {mb}: {exc} while timing it")
                status = "timeout"
                break
            if oom is not None:
                free_memory()
                if mb == batches[0] and not results and level < 2:
                    level += 1
                    mode = fall_back(level)
                    free_memory()
                    notes.append(f"micro-batch {mb}: out of memory ({oom}); retrying as {mode}")
                    log(notes[-1])
                    continue
                rec.update(status="out of memory", error=oom)
                results.append(rec)
                log(f"micro-batch {mb}: out of memory ({oom}); larger micro-batches skipped")
                break
            queue.pop(0)
            t = statistics.median(times)
            rec.update(
                status="done",
                step_s=t,
                step_times_s=times,
                samples_per_s=mb / t,
                tokens_per_s=flops["tokens"] / t,
                tflops=flops["flops"] / t / 1e12,
                mfu=flops["flops"] / t / 1e12 / PEAK_TFLOPS,
                mfu_6n=flops["flops_6n"] / t / 1e12 / PEAK_TFLOPS,
                loss=statistics.mean(losses),
            )
            if on_gpu:
                rec.update(
                    peak_gib=counter["peak_step"] / 2**30,
                    peak_fwd_bwd_gib=counter["peak_fwd_bwd"] / 2**30,
                    reserved_gib=torch.cuda.max_memory_reserved(device) / 2**30,
                )
            try:
                batch_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": mb})})
                rec["vlmlab_estimate_gib"] = stage_footprint(model, batch_cfg, 0, extent).total / 2**30
            except Exception as exc:  # noqa: BLE001 - the estimate is a side note
                rec["vlmlab_estimate_gib"] = f"n/a ({exc})"
            results.append(rec)
            log(
                f"micro-batch {mb}: step {t * 1000:.0f} ms (median of {n_timed} after {n_warm} warm-up), "
                f"{mb / t:.2f} samples/s, {flops['tokens'] / t:,.0f} tokens/s, {rec['tflops']:.3g} TFLOP/s "
                f"(analytic {flops['flops'] / 1e12:.3g} TFLOP/step), MFU {100 * rec['mfu']:.1f}% of {PEAK_TFLOPS:.0f}"
                + (
                    f"; peak {rec['peak_gib']:.1f} GiB (fwd+bwd {rec['peak_fwd_bwd_gib']:.1f}, reserved "
                    f"{rec['reserved_gib']:.1f}), vlmlab's estimate {rec['vlmlab_estimate_gib']:.1f} GiB"
                    if on_gpu and isinstance(rec["vlmlab_estimate_gib"], float)
                    else ""
                )
            )
            try:  # the cross-check and the profile: one step each, if time is left
                if deadline - time.perf_counter() > 3 * t + 5:
                    counted = counted_flops(lambda b=batch: step(b))
                    rec["counted_flops"] = counted["flops"]
                    rec["counted_attention_flops"] = counted["attention_flops"]
                    rec["counted_over_analytic"] = counted["flops"] / flops["flops"]
                    log(
                        f"  FlopCounterMode: {counted['flops'] / 1e12:.3g} TFLOP/step "
                        f"({rec['counted_over_analytic']:.3f} x analytic; attention "
                        f"{100 * counted['attention_flops'] / max(counted['flops'], 1):.1f}%)"
                    )
                if deadline - time.perf_counter() > 3 * t + 15:
                    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
                    t0 = time.perf_counter()
                    with profile(activities=activities) as prof:
                        step(batch, trace_ranges=True)
                        sync(device)
                    rec["profile"] = train_profile_summary(prof, on_gpu, t)
                    del prof
                    log(f"  profiled one step ({time.perf_counter() - t0:.1f} s with reading it)")
                    log("\n" + "\n".join(profile_tables(rec["profile"], mb)))
                else:
                    notes.append(f"micro-batch {mb}: not profiled ({deadline - time.perf_counter():.0f} s left)")
            except OOM_ERRORS as exc:
                notes.append(f"micro-batch {mb}: out of memory in the FLOP count / profile step ({exc})"[:300])
                free_memory()
            except CheckTimeout as exc:
                notes.append(f"micro-batch {mb}: {exc} in the FLOP count / profile step")
                status = "timeout"
                break
        done = [r for r in results if r.get("status") == "done"]
        if not done and status != "timeout":
            status = "fail"
        details = [
            f"- LLM {shape['layers']} layers x {shape['hidden']} (MLP {shape['ffn']}, {shape['heads']} heads, "
            f"vocabulary {model.llm.lm.config.vocab_size}), CLIP-shaped tower {image_tokens} tokens (frozen), gelu-mlp"
            f" projector; random weights, fp32 master weights, {cfg.train.mixed_precision} autocast (accelerate), "
            f"gradient checkpointing ({', '.join(checkpointed)}), vlmlab's build_optimizer (AdamW, lr 2e-5) + "
            f"TrainingStep (clip 1.0, non-finite guard); one GPU, no sharding",
            f"- mode: {mode}; weights {'from checks 3-4, cast to fp32' if reused else 'built in fp32'}; "
            f"{n_timed} timed steps after {n_warm} warm-up per micro-batch; skipped (non-finite) steps: "
            f"{counter.get('skipped', 0)}",
            f"- data: multi-turn shapes-world conversations, {image_tokens} vision + ~{text_tokens} text tokens "
            "per row (the number of turns closest to it), collated by VQADataset (left padding)",
            "- analytic FLOPs per step: 8 x N_trainable x T (forward 2 + backward 4 + recompute 2) "
            + ("+ 6 x N_frozen_LLM x T " if level == 2 else "")
            + f"+ 2 x N_tower x {tower_positions} x images (frozen tower, forward only); T = non-padding tokens. "
            f"MFU against {PEAK_TFLOPS:.0f} TFLOP/s; `MFU 6N` counts no recompute (PaLM's model FLOPs)",
            *(f"- note: {n}" for n in notes),
            "",
            "| micro-batch | status | step ms | samples/s | tokens/s | TFLOP/s | MFU | MFU 6N | TFLOP/step "
            "(counted/analytic) | peak GiB (fwd+bwd) | vlmlab estimate GiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            if r.get("status") != "done":
                details.append(f"| {r['micro_batch']} | {r['status']} | | | | | | | | | |")
                continue
            counted = f" ({r['counted_over_analytic']:.3f})" if "counted_over_analytic" in r else ""
            peak = f"{r['peak_gib']:.1f} ({r['peak_fwd_bwd_gib']:.1f})" if "peak_gib" in r else "-"
            est = r["vlmlab_estimate_gib"]
            details.append(
                f"| {r['micro_batch']} | {r['status']} | {r['step_s'] * 1000:.0f} | {r['samples_per_s']:.2f} | "
                f"{r['tokens_per_s']:,.0f} | {r['tflops']:.3g} | {100 * r['mfu']:.1f}% | {100 * r['mfu_6n']:.1f}% | "
                f"{r['flops'] / 1e12:.3g}{counted} | {peak} | {est if isinstance(est, str) else f'{est:.1f}'} |"
            )
        for r in done:
            if "profile" in r:
                details += ["", *profile_tables(r["profile"], r["micro_batch"])]
        if done:
            best = max(done, key=lambda r: r["samples_per_s"])
            prof = best.get("profile")
            bottleneck = ""
            if prof and prof["categories"]:
                cat, share = next(iter(prof["categories"].items()))
                bottleneck = f"; largest share {cat} {share['percent']:.0f}%"
                if prof.get("gpu_busy_of_step") is not None:
                    bottleneck += f", GPU busy {100 * prof['gpu_busy_of_step']:.0f}% of the step"
            headline = "; ".join(
                f"mb {r['micro_batch']}: "
                + (
                    f"{r['samples_per_s']:.2f} samples/s, {r['tflops']:.3g} TFLOP/s (MFU {100 * r['mfu']:.1f}%)"
                    + (f", peak {r['peak_gib']:.0f} GiB" if "peak_gib" in r else "")
                    if r.get("status") == "done"
                    else r["status"]
                )
                for r in results
            )
            headline += bottleneck + ("" if level == 0 else f" [{mode}]")
        else:
            headline = "no micro-batch size finished" + (f" ({notes[-1]})" if notes else "")
        log(headline)
        return {
            "status": status,
            "headline": headline,
            "mode": mode,
            "weights": "checks 3-4's, cast to fp32" if reused else "built in fp32",
            "trainable": trainable_counts,
            "peak_tflops": PEAK_TFLOPS,
            "micro_batches": results,
            "notes": notes,
            "details": details,
        }
    finally:
        acc.free_memory()  # drops accelerate's references to the model and optimizer (main frees the rest)


def profile_tables(p: dict, mb: int) -> list[str]:
    lines = [
        f"### micro-batch {mb}: one step by category ({p['time']}, {p['total_ms']:.1f} ms in all"
        + (f"; GPU busy {100 * p['gpu_busy_of_step']:.0f}% of the unprofiled step)" if p["gpu_busy_of_step"] else ")"),
        "",
        "| category | ms | % |",
        "|---|---|---|",
        *(f"| {k} | {v['ms']:.1f} | {v['percent']:.1f} |" for k, v in p["categories"].items()),
        "",
        "| phase | ms | % |",
        "|---|---|---|",
        *(f"| {k} | {v['ms']:.1f} | {v['percent']:.1f} |" for k, v in p["phases"].items()),
        "",
        "| op | category | calls | ms | % |",
        "|---|---|---|---|---|",
        *(
            f"| `{o['name']}` | {o['category']} | {o['calls']} | {o['ms']:.1f} | {o['percent']:.1f} |"
            for o in p["top_ops"]
        ),
    ]
    if p["top_kernels"]:
        lines += ["", "| kernel | calls | ms | % |", "|---|---|---|---|"]
        lines += [
            f"| `{short(k['name'])}` | {k['calls']} | {k['ms']:.1f} | {k['percent']:.1f} |" for k in p["top_kernels"]
        ]
    return lines


# ----- driver --------------------------------------------------------------------------------------------------


class Context:
    def __init__(self, args, log: Log, device: torch.device, out: Path):
        self.args, self.log, self.device, self.out = args, log, device, out
        self.dry = args.dry_run
        self.seed = args.seed
        self.cache: dict = {}
        self.limit = 0.0
        self.work = Path(tempfile.mkdtemp(prefix="gpu-checks-"))  # prompt images: not in --out (files come back)
        batches = args.gen_batches or size("gen_batches", self.dry)
        self.gen_batches = [int(b) for b in str(batches).split(",") if b.strip()] if 4 in args.only else []


RUNNERS = {
    1: check_scan,
    2: check_vmamba_precision,
    3: check_decode_profile,
    4: check_generation,
    5: check_finetune_step,
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else ./gpu-checks)")
    ap.add_argument("--dry-run", action="store_true", help="every check at tiny shapes on CPU")
    ap.add_argument("--only", default="1,2,3,4,5", help="checks to run, e.g. 1,3")
    ap.add_argument(
        "--limits", default=None, help="seconds per check 1..5 (default 45,90,110,75,150; dry 60,60,90,90,90)"
    )
    ap.add_argument("--budget-s", type=float, default=None, help="whole run (default 420; dry 150)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--install-mamba", action="store_true", help="pip install --mamba-spec first (GPU machine)")
    ap.add_argument("--mamba-spec", default="mamba-ssm", help="what --install-mamba installs (e.g. a wheel path)")
    ap.add_argument("--install-timeout", type=float, default=240)
    ap.add_argument("--ssm-steps", type=int, default=None, help="check 2 training steps (default 300; dry 20)")
    ap.add_argument("--ssm-lr", type=float, default=1e-3)
    ap.add_argument("--layers", type=int, default=None, help="checks 3-5: decoder layers (default 32)")
    ap.add_argument("--hidden", type=int, default=None, help="checks 3-5: width (default 4096)")
    ap.add_argument("--ffn", type=int, default=None, help="checks 3-5: MLP width (default 11008)")
    ap.add_argument("--heads", type=int, default=None, help="checks 3-5: attention heads (default 32)")
    ap.add_argument("--tiny-tower", action="store_true", help="checks 3-5: a 2-layer CLIP tower instead of ViT-L")
    ap.add_argument("--n-probe", type=int, default=None, help="check 3 batch (default 16)")
    ap.add_argument("--dpvr-layer", type=int, default=None, help="check 3 (default 18 of 32, scaled with --layers)")
    ap.add_argument("--fastv-layer", type=int, default=2)
    ap.add_argument("--fastv-ratio", type=float, default=0.5)
    ap.add_argument("--no-trace", action="store_true", help="check 3: no Chrome traces")
    ap.add_argument("--gen-batches", default=None, help="check 4 batch sizes (default 16,64)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="check 4 (default 16)")
    ap.add_argument("--ft-batches", default=None, help="check 5 micro-batch sizes (default 4,8; dry 2,4)")
    ap.add_argument(
        "--ft-text-tokens", type=int, default=None, help="check 5 text tokens per row (default 250; dry 80)"
    )
    args = ap.parse_args(argv)
    try:
        args.only = sorted({int(c) for c in args.only.split(",") if c.strip()})
    except ValueError:
        ap.error(f"--only: comma-separated check numbers 1-5, got {args.only!r}")
    if not args.only or not set(args.only) <= set(RUNNERS):
        ap.error(f"--only: check numbers 1-5, got {args.only}")
    limits = (args.limits or size("limits", args.dry_run)).split(",")
    if len(limits) != len(RUNNERS):
        ap.error(f"--limits: {len(RUNNERS)} numbers of seconds")
    args.limits = {i + 1: float(v) for i, v in enumerate(limits)}
    args.budget_s = args.budget_s or size("budget_s", args.dry_run)
    args.ssm_steps = args.ssm_steps or size("ssm_steps", args.dry_run)
    return args


def main(argv=None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    out = Path(args.out or os.environ.get("OUT") or "gpu-checks")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_checks.log").unlink(missing_ok=True)
    log = Log(out / "gpu_checks.log")
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # tiny shapes: on a shared 2-core machine, 2 OpenMP threads ran 50x slower
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        log("no CUDA device: run with --dry-run for the CPU path")
        return 2
    installed = install_mamba(args.mamba_spec, args.install_timeout, log) if args.install_mamba else None
    sys.path.insert(0, str(ROOT / "src"))  # this tree's vlmlab, whatever else is installed
    try:
        from vlmlab.parts import load_builtin_parts

        load_builtin_parts()
    except ImportError as exc:
        log(f"vlmlab does not import ({exc}): install it and its dependencies (pyproject.toml) first")
        return 2
    env = environment(device)
    if installed is not None:
        env["mamba_install"] = installed
    log(
        f"device {env['device']}; torch {env['torch']} (CUDA {env['cuda']}); transformers {env['transformers']}; "
        f"mamba-ssm {env['mamba_ssm']}; python {env['python']}; vlmlab {env['commit']}"
    )
    report = Report(out, env, dict(vars(args)))
    report.save()
    ctx = Context(args, log, device, out)
    for number in args.only:
        left = args.budget_s - (time.perf_counter() - start)
        if left < 20:
            log(f"\n== check {number} skipped: {left:.0f} s left of the {args.budget_s:.0f} s budget")
            report.set(number, {"status": "skipped (budget)", "seconds": 0.0})
            continue
        ctx.limit = min(args.limits[number], left - 5)
        log(f"\n== check {number}: {CHECKS[number]} (limit {ctx.limit:.0f} s)")
        t0 = time.perf_counter()
        try:
            with time_limit(ctx.limit):
                record = RUNNERS[number](ctx)
        except CheckTimeout as exc:
            record = {"status": "timeout", "error": str(exc)}
        except Exception:  # noqa: BLE001 - one check's failure is reported, the others still run
            record = {"status": "error", "error": traceback.format_exc(limit=8)}
        record["seconds"] = time.perf_counter() - t0
        if record.get("error"):
            log(record["error"].rstrip())
        log(f"== check {number}: {record['status']} in {record['seconds']:.1f} s")
        later = [n for n in args.only if n > number and n in USES_VLM]  # check 5 takes the weights over
        if not later or record["status"] in ("timeout", "error"):
            ctx.cache.pop("vlm", None)
        free_memory()
        report.set(number, record)
    if device.type == "cuda":
        env["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    env["total_seconds"] = round(time.perf_counter() - start, 1)
    shutil.rmtree(ctx.work, ignore_errors=True)
    report.save()
    log(f"\ntotal {env['total_seconds']:.0f} s; summary in {out / 'gpu_checks.md'} and {out / 'gpu_checks.json'}")
    for number, rec in report.checks.items():
        why = rec.get("headline") or (rec.get("error") or "").strip().splitlines()[-1:] or [""]
        log(f"  {number}. {CHECKS[int(number)]}: {rec['status']} - {why if isinstance(why, str) else why[0]}")
    return 0 if all(r["status"] not in ("error", "fail", "timeout") for r in report.checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
