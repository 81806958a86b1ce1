"""Evaluation throughput: vlmlab's batched greedy decoding vs transformers' `generate` on the same exported model.

Trains a tiny demo-like run that maps exactly onto HF LLaVA (CLIP-family ViT, gelu-mlp projector, the cached
llama2-tiny rung of `vlmlab demo --quick`, `full` routing, `resize` geometry), exports it with
`vlmlab export RUN OUT --format hf-llava`, then answers the same N easy-VQA test items three ways, on the same
device and dtype:

  (a) vlmlab: `vlmlab.evaluation.evaluate.predict` (what `vlmlab eval` runs: left-padded batches, one prefill,
      KV-cache greedy decoding) at batch `--batch` (default: the run's `eval.batch_size`);
  (b) transformers: `LlavaForConditionalGeneration.from_pretrained(export).generate(do_sample=False)`, one item
      at a time, as LLaVA's and Prismatic's evaluators do;
  (c) the same `generate`, batched (`--batch`) with left padding.

(b) and (c) get their inputs from the exported processor (chat template, tokenizer, image processor); the script
first asserts that their prompt token ids and pixels equal vlmlab's for a few items, and that the whole first
left-padded batch of (c) equals vlmlab's. Answers are the newly generated tokens cut at the stop token, decoded as
vlmlab does. vlmlab's model gets its parameters (not its buffers) in --dtype, as `from_pretrained(dtype=...)` does.
Each way is warmed up once, then timed `--repeat` times, interleaved, from items (question, image path) to answer
tokens or strings, model loading excluded; the table shows the median (every repeat is printed below it, the
machine may be shared). For each way whose tokens differ from vlmlab's, it prints a few differing items: both token
sequences, vlmlab's answer for the item alone (batch 1), and each model's next-token logits alone at the first
differing step (top 2, margin, largest difference between the two models).

Usage: python benchmarks/bench_eval.py [--n 256] [--batch B] [--steps 300] [--run RUN_DIR] [--out DIR]
       [--repeat 5] [--workers W] [--device cuda --dtype bfloat16]
Without --out everything goes to a temporary directory; --run reuses a trained (exportable) run.
Goals (issue 21): (a) >= 10x (b), >= 1x (c), 100% identical answers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")

import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoProcessor, LlavaForConditionalGeneration  # noqa: E402

from vlmlab.cli import main as vlmlab  # noqa: E402
from vlmlab.config import DataSource, config_from_dict  # noqa: E402
from vlmlab.data.dataset import VQADataset  # noqa: E402
from vlmlab.data.loader import resolve_workers  # noqa: E402
from vlmlab.evaluation.evaluate import predict  # noqa: E402
from vlmlab.evaluation.generate import greedy_generate  # noqa: E402
from vlmlab.evaluation.records import load_eval_sets  # noqa: E402
from vlmlab.models.llm.prompts import user_message  # noqa: E402
from vlmlab.parts import load_builtin_parts  # noqa: E402
from vlmlab.runs import load_run_model  # noqa: E402
from vlmlab.train.trainer import Trainer  # noqa: E402

load_builtin_parts()

# A demo-quick-sized model that HF LLaVA can hold exactly (see vlmlab.interop.llava_export.why_not_llava).
TINY_LLAVA = {
    "name": "bench-eval",
    "seed": 0,
    "model": {
        "vision": {
            "id": "vit",
            "family": "clip",
            "feature_layer": -2,
            "patch_size": 8,
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
        },
        "projector": {"id": "gelu-mlp"},
        "llm": {
            "id": "llama2-tiny",
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
            "pretrain": {"tokens": 400000},
        },
        "routing": {"id": "full"},
    },
    "data": {
        "train": {"task": "easy-vqa", "split": "train", "limit": 8000},
        "eval": [{"task": "easy-vqa", "split": "test"}],
        "image": {"size": 64, "geometry": "resize"},
    },
    "train": {
        "batch_size": 32,
        "stages": [{"name": "finetune", "max_steps": 300, "lr": {"vision": 1e-3, "projector": 2e-3, "llm": 2e-3}}],
    },
    "eval": {"batch_size": 128, "max_new_tokens": 10},
}


def train_run(out: Path, steps: int) -> Path:
    train = TINY_LLAVA["train"]
    cfg = {**TINY_LLAVA, "train": {**train, "stages": [{**train["stages"][0], "max_steps": steps}]}}
    t0 = time.perf_counter()
    result = Trainer(config_from_dict(cfg), out).run_training()
    print(f"trained {result.steps} steps in {time.perf_counter() - t0:.0f}s -> {out}")
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cut_at_stop(ids: list[int], stop: int) -> list[int]:
    """The generated tokens before the first stop token, as `greedy_generate` returns them."""
    return ids[: ids.index(stop)] if stop in ids else ids


class HFWay:
    """Inputs built with the exported processor, answers from `LlavaForConditionalGeneration.generate`."""

    def __init__(self, export_dir: Path, device: str, dtype: torch.dtype, max_new_tokens: int, stop: int):
        self.processor = AutoProcessor.from_pretrained(export_dir)
        self.processor.tokenizer.padding_side = "left"
        self.model = LlavaForConditionalGeneration.from_pretrained(export_dir, dtype=dtype).to(device).eval()
        self.device, self.dtype, self.max_new_tokens, self.stop = device, dtype, max_new_tokens, stop
        self.pad = self.processor.tokenizer.pad_token_id

    def prompt(self, question: str) -> str:
        return self.processor.apply_chat_template(user_message(question), add_generation_prompt=True, tokenize=False)

    def processed(self, items):
        """What the exported processor makes of the items' prompts and images (on the CPU, float32 pixels)."""
        images = []
        for it in items:
            with Image.open(it.image) as img:
                images.append(img.convert("RGB"))
        prompts = [self.prompt(it.question) for it in items]
        return self.processor(text=prompts, images=images, padding=True, return_tensors="pt")

    def inputs(self, items) -> dict[str, torch.Tensor]:
        enc = self.processed(items).to(self.device)
        enc["pixel_values"] = enc["pixel_values"].to(self.dtype)
        return enc

    @torch.no_grad()
    def answer(self, items) -> list[list[int]]:
        enc = self.inputs(items)
        out = self.model.generate(
            **enc,
            do_sample=False,
            num_beams=1,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=self.stop,
            pad_token_id=self.pad,
        )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        return [cut_at_stop(row, self.stop) for row in new]

    def decode(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()

    @torch.no_grad()
    def next_logits(self, item, prefix: list[int]) -> torch.Tensor:
        enc = self.inputs([item])
        ids = torch.cat([enc["input_ids"], torch.tensor([prefix], dtype=torch.long, device=self.device)], dim=1)
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=enc["pixel_values"])
        return out.logits[0, -1].float()


def check_same_inputs(model, cfg, hf: HFWay, items, batch: int) -> None:
    """Prompt ids and pixels from the exported processor == vlmlab's, item by item and for a left-padded batch."""
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    assert hf.prompt(items[0].question) == model.llm.render_prompt(items[0].question)
    for i in range(min(4, len(items))):
        enc = hf.processed([items[i]])
        ours = data.collate([data[i]])
        assert enc["input_ids"][0].tolist() == data[i].ids, f"prompt ids differ for item {items[i].item_id}"
        assert torch.equal(enc["pixel_values"], ours.pixel_values), f"pixels differ for item {items[i].item_id}"
    n = min(batch, len(items))
    enc = hf.processed(items[:n])
    ours = data.collate([data[i] for i in range(n)])
    assert torch.equal(enc["input_ids"], ours.input_ids), "left-padded batch ids differ"
    assert torch.equal(enc["attention_mask"], ours.attention_mask), "left-padded attention masks differ"
    assert torch.equal(enc["pixel_values"], ours.pixel_values), "batch pixels differ"
    print(f"inputs identical: prompt ids and pixels of 4 items, and a left-padded batch of {n}")


@torch.no_grad()
def vlmlab_tokens(model, cfg, items, batch: int, device: str) -> list[list[int]]:
    """The tokens behind `predict`'s answers: the same dataset, batches and `greedy_generate` (untimed)."""
    data = VQADataset(items, model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    out = []
    for start in range(0, len(data), batch):
        b = data.collate([data[j] for j in range(start, min(start + batch, len(data)))]).to(device)
        out += greedy_generate(model, b, cfg.eval.max_new_tokens).token_ids
    return out


@torch.no_grad()
def vlmlab_next_logits(model, cfg, item, prefix: list[int], device: str) -> torch.Tensor:
    data = VQADataset([item], model.llm, cfg.data.image, model.num_image_tokens, with_answers=False)
    b = data.collate([data[0]]).to(device)
    ids = torch.cat([b.input_ids, torch.tensor([prefix], dtype=torch.long, device=device)], dim=1)
    pad = torch.zeros((1, len(prefix)), dtype=torch.bool, device=device)
    return model.logits(ids, torch.ones_like(ids), torch.cat([b.image_mask, pad], dim=1), b.pixel_values)[0, -1]


def timed(fn, device: str):
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - t0


def explain_differences(name, items, ours, theirs, model, cfg, hf: HFWay, device: str, show: int = 5) -> None:
    """For the first `show` differing items: both token sequences, vlmlab's answer for the item alone (batch 1),
    and the next-token logits of each model alone at the first differing step (their top 2, margin, and how far
    apart the two models' logits are)."""
    diff = [i for i in range(len(items)) if ours[i] != theirs[i]]
    for i in diff[:show]:
        a, b = ours[i], theirs[i]
        k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
        alone = vlmlab_tokens(model, cfg, [items[i]], 1, device)[0]
        ours_l, theirs_l = vlmlab_next_logits(model, cfg, items[i], a[:k], device), hf.next_logits(items[i], a[:k])
        tops = []
        for who, logits in (("vlmlab", ours_l), ("HF", theirs_l)):
            top = logits.topk(2)
            tops.append(f"{who} top-2 {top.indices.tolist()} margin {float(top.values[0] - top.values[1]):.3g}")
        print(
            f"  ({name}) item {items[i].item_id} {items[i].question!r}: vlmlab {a} {hf.decode(a)!r} vs {b} "
            f"{hf.decode(b)!r}, first different at step {k}; vlmlab at batch 1: {alone} "
            f"({'same as' if alone == b else 'differs from'} ({name})); logits of each model alone at step {k}: "
            + ", ".join(tops)
            + f", max |vlmlab - HF| {float((ours_l - theirs_l).abs().max()):.3g}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256, help="easy-vqa test items")
    ap.add_argument("--batch", type=int, default=None, help="batch for (a) and (c); default: the run's eval.batch_size")
    ap.add_argument("--steps", type=int, default=300, help="finetune steps of the trained run")
    ap.add_argument("--run", default=None, help="reuse this trained run instead of training one")
    ap.add_argument("--out", default=None, help="keep the run and the export here (default: a temporary dir)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per way, interleaved; the median is shown")
    ap.add_argument("--workers", type=int, default=None, help="(a)'s data-loader workers; default: data.workers (auto)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        run = Path(args.run) if args.run else train_run(out / "run", args.steps)
        export = out / "llava"
        if export.exists():
            shutil.rmtree(export)
        assert vlmlab(["export", str(run), str(export), "--format", "hf-llava"]) == 0

        model, cfg = load_run_model(run, device=args.device)
        for p in model.parameters():  # parameters only, as from_pretrained(dtype=...): RoPE's inv_freq stays fp32
            p.data = p.data.to(dtype)
        batch = args.batch or cfg.eval.batch_size
        data_cfg = cfg.data.model_copy(
            update={"workers": args.workers if args.workers is not None else cfg.data.workers}
        )
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"batch_size": batch}), "data": data_cfg})
        source = DataSource(task="easy-vqa", split="test", limit=args.n)
        items = load_eval_sets([source], cfg.data.image)[0].items
        hf = HFWay(export, args.device, dtype, cfg.eval.max_new_tokens, model.llm.stop_token_id)
        assert hf.stop == model.llm.stop_token_id and hf.pad == model.llm.pad_token_id
        check_same_inputs(model, cfg, hf, items, batch)

        ways = {
            f"(a) vlmlab `predict`, batch {batch}": lambda: predict(model, cfg, [source]),
            "(b) HF `generate`, one item at a time": lambda: [hf.answer([it])[0] for it in items],
            f"(c) HF `generate`, batch {batch}, left padding": lambda: [
                ids for s in range(0, len(items), batch) for ids in hf.answer(items[s : s + batch])
            ],
        }
        # warm-up: each way once, on its own first batch (or item)
        predict(model, cfg, [source.model_copy(update={"limit": min(batch, args.n)})])
        hf.answer(items[:1])
        hf.answer(items[:batch])
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        load = os.getloadavg()
        results = {}
        for _ in range(args.repeat):  # interleaved, so a busy neighbour slows every way alike
            for name, way in ways.items():
                results[name], t = timed(way, args.device)
                seconds[name].append(t)
        median = {name: statistics.median(ts) for name, ts in seconds.items()}
        (name_a, records), (_, single), (_, batched) = results.items()
        answers = list(records["prediction"])

        ours = vlmlab_tokens(model, cfg, items, batch, args.device)
        assert answers == [model.llm.decode(ids) for ids in ours], "predict's answers != its tokens"
        n = len(items)

        print(
            f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
            + (f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else "")
            + f"; torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}; "
            f"load average {load[0]:.1f} before timing, {os.getloadavg()[0]:.1f} after."
        )
        if max(load[0], os.getloadavg()[0]) > 1.5 * (os.cpu_count() or 1):
            print("WARNING: the machine was busy while timing (load average above); items/s are not reliable.")
        print(f"Command: `{' '.join(['python', 'benchmarks/bench_eval.py', *sys.argv[1:]])}`")
        print(
            f"{n} easy-VQA test items, {args.device} {args.dtype}, max_new_tokens {cfg.eval.max_new_tokens} "
            f"(vlmlab answers {statistics.mean(map(len, ours)):.1f} tokens on average); "
            f"{args.repeat} timed repeats per way; vlmlab data-loader workers {resolve_workers(cfg.data.workers)}; vlmlab accuracy {records['correct'].mean():.3f}.\n"
        )
        print("| way | items/s | vlmlab / way | identical answers (vs vlmlab) |\n|---|---|---|---|")
        for name, tokens in zip(ways, (None, single, batched)):
            same = 0 if tokens is None else sum(answers[i] == hf.decode(tokens[i]) for i in range(n))
            ident = "—" if tokens is None else f"{same}/{n} ({100 * same / n:.1f}%)"
            print(f"| {name} | {n / median[name]:.1f} | {median[name] / median[name_a]:.2f}× | {ident} |")
        print(
            "\nitems/s per repeat (median shown): "
            + "; ".join(f"{name.split()[0]} " + ", ".join(f"{n / t:.1f}" for t in ts) for name, ts in seconds.items())
        )
        for name, tokens in (("b", single), ("c", batched)):
            if tokens != ours:
                count = sum(a != b for a, b in zip(ours, tokens))
                print(f"\n({name}): {count} of {n} items differ in their tokens:")
                explain_differences(name, items, ours, tokens, model, cfg, hf, args.device)


if __name__ == "__main__":
    main()
