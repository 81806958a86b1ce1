"""LM ladder benchmark: build llama1/2/3-tiny from scratch in a fresh cache and check "newer = better LM".

Times the three rungs at the demo's size (128 wide, 4 layers) and prints held-out bits per byte,
parameter counts, tokens and epochs; exits non-zero unless bits per byte strictly decrease gen1 > gen2 > gen3.

Usage: python benchmarks/bench_lm_ladder.py [--cache DIR] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLMLAB_NO_PROGRESS", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None, help="cache dir (default: a fresh temp dir, so everything is built)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="backbone overrides")
    args = parser.parse_args()
    os.environ["VLMLAB_CACHE"] = args.cache or tempfile.mkdtemp(prefix="vlmlab-ladder-")

    from vlmlab.cli import main as cli

    started = time.perf_counter()
    code = cli(["pretrain-lm", *sum((["--set", s] for s in args.set), [])])
    minutes = (time.perf_counter() - started) / 60
    if code:
        return code
    from vlmlab.io import read_json

    records = {}
    for entry in sorted((Path(os.environ["VLMLAB_CACHE"]) / "backbones").iterdir()):
        r = read_json(entry / "pretraining.json")
        records[r["backbone"]] = r["heldout"]["bits_per_byte"]
    bpb = [records[f"llama{g}-tiny"] for g in (1, 2, 3)]
    ordered = bpb[0] > bpb[1] > bpb[2]
    print(
        f"ladder built in {minutes:.1f} min; bits/byte gen1 {bpb[0]:.4f} > gen2 {bpb[1]:.4f} > gen3 {bpb[2]:.4f}: "
        f"{'yes' if ordered else 'NO'}"
    )
    return 0 if ordered else 1


if __name__ == "__main__":
    sys.exit(main())
