"""shapes-world generator: seeded scenes of 1-6 coloured shapes with exact boxes, plus unambiguous questions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlmlab import io
from vlmlab.cache import cache_root
from vlmlab.errors import UserError
from vlmlab.progress import console, progress

SHAPES = ("circle", "square", "triangle", "diamond")
PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 80, 230),
    "yellow": (245, 205, 15),
    "purple": (150, 50, 190),
    "cyan": (20, 195, 215),
}
COLORS = tuple(PALETTE)
BACKGROUND = (245, 245, 245)
SIZE_RANGES = {"small": (0.14, 0.20), "large": (0.26, 0.34)}  # side of an object's square frame / image size
LARGE_PROB = 0.4
MAX_OBJECTS = 6
GAP = 2  # free pixels at least between two objects' frames: boxes never overlap (IoU 0, no occlusion)
PLACEMENT_TRIES = 60
SPATIAL_MARGIN = 0.125  # a relation holds when box centres differ by >= this fraction of the image size
SPLITS = ("train", "val", "test")
RELATIONS = ("left of", "right of", "above", "below")
FAMILIES = {
    "color": "perception",
    "shape": "perception",
    "exist": "perception",
    "count": "reasoning",
    "compare": "reasoning",
    "spatial": "reasoning",
    "conjunction": "reasoning",
    "ground": "grounding",
}


# ----- scenes ---------------------------------------------------------------------------------
def _apart(a: tuple, b: tuple) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def _place(rng: np.random.Generator, size: int, kind: str, frames: list[tuple]) -> tuple | None:
    """A square frame (x1, y1, x2, y2), right/bottom exclusive, clear of `frames`; None if none was found."""
    lo, hi = SIZE_RANGES[kind]
    side = int(rng.integers(max(3, round(lo * size)), max(4, round(hi * size)) + 1))
    for _ in range(PLACEMENT_TRIES):
        x, y = (int(v) for v in rng.integers(1, size - side, size=2))
        frame = (x, y, x + side, y + side)
        if all(_apart(frame, f) for f in frames):
            return frame
    return None


def sample_objects(rng: np.random.Generator, size: int) -> list[dict]:
    """1-6 objects with shape, colour, size class and frame; large frames that do not fit become small."""
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    while True:  # a layout that cannot be completed is redrawn (rare; always possible for size >= 32)
        objects: list[dict] = []
        for _ in range(n):
            kind = "large" if rng.random() < LARGE_PROB else "small"
            frames = [o["frame"] for o in objects]
            frame = _place(rng, size, kind, frames)
            if frame is None and kind == "large":
                kind, frame = "small", _place(rng, size, "small", frames)
            if frame is None:
                break
            shape, color = SHAPES[int(rng.integers(len(SHAPES)))], COLORS[int(rng.integers(len(COLORS)))]
            objects.append({"shape": shape, "color": color, "size": kind, "frame": frame})
        if len(objects) == n:
            return objects


def render(objects: list[dict], size: int) -> np.ndarray:
    """Draws the objects (no anti-aliasing) and sets each one's exact `box` and pixel `area`; returns RGB."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for k, obj in enumerate(objects, start=1):
        x1, y1, x2, y2 = obj["frame"]
        x2, y2 = x2 - 1, y2 - 1  # PIL coordinates are inclusive
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        if obj["shape"] == "circle":
            draw.ellipse([x1, y1, x2, y2], fill=k)
        elif obj["shape"] == "square":
            draw.rectangle([x1, y1, x2, y2], fill=k)
        elif obj["shape"] == "triangle":
            draw.polygon([(x1, y2), (x2, y2), (cx, y1)], fill=k)
        else:
            draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=k)
    labels = np.asarray(canvas)
    for k, obj in enumerate(objects, start=1):
        ys, xs = np.nonzero(labels == k)
        obj["box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        obj["area"] = int(xs.size)
        del obj["frame"]
    lut = np.array([BACKGROUND] + [PALETTE[o["color"]] for o in objects], dtype=np.uint8)
    return lut[labels]


def box_text_coords(box: list[int], size: int) -> list[int]:
    """Pixel box (right/bottom exclusive) -> integers 0-99: floor(v * 99 / size + 1/2) per coordinate."""
    return [(2 * 99 * v + size) // (2 * size) for v in box]


def scene_labels(objects: list[dict]) -> dict[str, str]:
    """Per-image classes for vision pretraining: `count`; `has_<colour>_<shape>` (yes/no) for each of the
    24 kinds, which needs the tower to bind colour to shape; and `largest_shape`/`largest_color` of the
    object with the most pixels (left out when two objects tie). All are unchanged by flips and rotations."""
    labels = {"count": str(len(objects))}
    present = {(o["color"], o["shape"]) for o in objects}
    labels.update({f"has_{c}_{sh}": _yes((c, sh) in present) for c in COLORS for sh in SHAPES})
    areas = sorted((o["area"] for o in objects), reverse=True)
    if len(areas) == 1 or areas[0] > areas[1]:
        largest = max(objects, key=lambda o: o["area"])
        labels.update(largest_shape=largest["shape"], largest_color=largest["color"])
    return labels


# ----- questions -------------------------------------------------------------------------------
def unique_name(obj: dict, objects: list[dict]) -> str | None:
    """ "red circle" when no other object is a red circle, else None (the name would be ambiguous)."""
    same = sum(o["color"] == obj["color"] and o["shape"] == obj["shape"] for o in objects)
    return f"{obj['color']} {obj['shape']}" if same == 1 else None


def relation(a: dict, b: dict, rel: str, margin: float) -> bool | None:
    """Whether `a rel b` (box centres, y down), or None when the centres are closer than `margin`."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a["box"], b["box"]
    dx, dy = (bx1 + bx2 - ax1 - ax2) / 2, (by1 + by2 - ay1 - ay2) / 2  # b's centre minus a's
    d = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[rel]
    return True if d >= margin else False if d <= -margin else None


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def candidate_questions(objects: list[dict], size: int) -> dict[str, list[tuple[str, object]]]:
    """Every unambiguous question per category as (question, answer); `ground` answers are objects."""
    shapes, colors = [o["shape"] for o in objects], [o["color"] for o in objects]
    named = [(o, name) for o in objects if (name := unique_name(o, objects))]
    margin = SPATIAL_MARGIN * size
    out: dict[str, list] = {c: [] for c in FAMILIES}
    out["ground_relational"] = []
    for s in SHAPES:
        if shapes.count(s) == 1:
            out["color"].append((f"What color is the {s}?", colors[shapes.index(s)]))
        out["count"].append((f"How many {s}s are there?", str(shapes.count(s))))
    for c in COLORS:
        if colors.count(c) == 1:
            out["shape"].append((f"What shape is the {c} object?", shapes[colors.index(c)]))
        out["count"].append((f"How many {c} objects are there?", str(colors.count(c))))
        for s in SHAPES:
            out["exist"].append(
                (f"Is there a {c} {s}?", _yes(any(o["color"] == c and o["shape"] == s for o in objects)))
            )
            loose = c in colors and s in shapes  # "a red shape and a circle" may or may not mean two objects:
            strict = any(a is not b for a in objects if a["color"] == c for b in objects if b["shape"] == s)
            if loose == strict:  # ask only when both readings give the same answer
                out["conjunction"].append((f"Is there a {c} shape and a {s}?", _yes(strict)))
    for values, pool, noun in ((SHAPES, shapes, "{}s"), (COLORS, colors, "{} objects")):
        for x in values:
            for y in values:
                if x != y and (pool.count(x) or pool.count(y)):
                    q = f"Are there more {noun.format(x)} than {noun.format(y)}?"
                    out["compare"].append((q, _yes(pool.count(x) > pool.count(y))))
    for a, name_a in named:
        out["ground"].append((f"Give the box of the {name_a}.", a))
        for rel in RELATIONS:
            for b, name_b in named:
                if a is not b and (holds := relation(a, b, rel, margin)) is not None:
                    out["spatial"].append((f"Is the {name_a} {rel} the {name_b}?", _yes(holds)))
            verdicts = [(relation(o, a, rel, margin), o) for o in objects if o is not a]
            hits = [o for v, o in verdicts if v]
            if len(hits) == 1 and all(v is not None for v, _ in verdicts):
                out["ground_relational"].append((f"Give the box of the shape {rel} the {name_a}.", hits[0]))
    return out


def _pick(rng: np.random.Generator, candidates: list[tuple[str, object]]) -> tuple[str, object]:
    """A uniform answer first (balances yes/no and counts), then a uniform question with that answer."""
    answers = sorted({a for _, a in candidates}, key=str) if isinstance(candidates[0][1], str) else None
    if answers is not None:
        want = answers[int(rng.integers(len(answers)))]
        candidates = [c for c in candidates if c[1] == want]
    return candidates[int(rng.integers(len(candidates)))]


def scene_questions(rng: np.random.Generator, objects: list[dict], size: int) -> list[dict]:
    """One question per category that has an unambiguous one; `ground` is relational half the time."""
    cands = candidate_questions(objects, size)
    relational = cands.pop("ground_relational")
    if relational and (not cands["ground"] or rng.random() < 0.5):
        cands["ground"] = relational
    records = []
    for category, options in cands.items():
        if not options:
            continue
        question, answer = _pick(rng, options)
        record = {"question": question, "answer": answer, "category": category, "family": FAMILIES[category]}
        if category == "ground":
            box = box_text_coords(answer["box"], size)  # type: ignore[index]
            record.update(answer=f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]", box=box)
        records.append(record)
    return records


# ----- the data directory ----------------------------------------------------------------------
def split_assignment(seed: int, n: int, fractions: tuple[float, float, float]) -> list[str]:
    """Each scene's split: a seeded permutation cut at round(f_train * n) and round(f_val * n) more."""
    n_train = round(fractions[0] * n)
    n_val = min(round(fractions[1] * n), n - n_train)
    order = np.random.default_rng([seed, 1]).permutation(n)
    splits = [""] * n
    for rank, i in enumerate(order):
        splits[int(i)] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return splits


def _check_args(seed: int, n: int, size: int, fractions) -> None:
    if seed < 0 or n < 1:
        raise UserError(f"shapes-world: --seed must be >= 0 and --n >= 1 (got {seed}, {n})", exit_code=2)
    if not 32 <= size <= 4096:
        raise UserError(f"shapes-world: --size must be in 32..4096 (got {size})", exit_code=2)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(
            f"shapes-world: --split-fractions must be 3 non-negative numbers summing to 1 (got {list(fractions)})",
            exit_code=2,
        )


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def generate(
    out: str | Path, seed: int, n: int, size: int = 64, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, int]:
    """Writes `out/` (images/*.png, scenes.jsonl, train/val/test.jsonl, meta.json); byte-identical per
    (seed, n, size, fractions). Scene i depends only on (seed, i, size). Returns counts."""
    _check_args(seed, n, size, fractions)
    out = io.require_fresh_dir(out, "--out")
    with io.atomic_dir(out) as tmp:
        (tmp / "images").mkdir(parents=True)
        splits = split_assignment(seed, n, fractions)
        width = max(6, len(str(n - 1)))
        scenes: list[dict] = []
        qa: dict[str, list[dict]] = {s: [] for s in SPLITS}
        with progress() as bar:
            job = bar.add_task(f"shapes-world scenes (seed {seed})", total=n, info="")
            for i in range(n):
                _scene(tmp, seed, i, size, width, splits, scenes, qa)
                if (i + 1) % 100 == 0 or i + 1 == n:
                    bar.update(job, completed=i + 1)
        _write_jsonl(tmp / "scenes.jsonl", scenes)
        for split, records in qa.items():
            _write_jsonl(tmp / f"{split}.jsonl", records)
        counts = {
            "scenes": n,
            **{f"{s}_scenes": splits.count(s) for s in SPLITS},
            **{f"{s}_questions": len(r) for s, r in qa.items()},
        }
        meta = {
            "generator": "shapes-world",
            "version": 1,
            "seed": seed,
            "n": n,
            "size": size,
            "split_fractions": list(fractions),
            "counts": counts,
            "box_text": "[x1, y1, x2, y2], each floor(v * 99 / size + 1/2) of the pixel box (right/bottom exclusive)",
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return counts


def _scene(tmp: Path, seed: int, i: int, size: int, width: int, splits: list, scenes: list, qa: dict) -> None:
    """Scene i (a pure function of seed, i and size): its image, its record and its questions."""
    rng = np.random.default_rng([seed, 0, i])
    scene_id, image = f"{i:0{width}d}", f"images/{i:0{width}d}.png"
    objects = sample_objects(rng, size)
    Image.fromarray(render(objects, size)).save(tmp / image, format="PNG", compress_level=6)
    scenes.append(
        {"scene_id": scene_id, "image": image, "split": splits[i], "width": size, "height": size, "objects": objects}
    )
    for rec in scene_questions(rng, objects, size):
        qa[splits[i]].append({"id": f"{scene_id}-{rec['category']}", "image": image, **rec, "scene_id": scene_id})


def cached_dataset(seed: int, n: int, size: int = 64) -> Path:
    """The shapes-world directory for (seed, n, size) in the user cache, generated on first use (`generate`
    writes a temp dir, then renames it)."""
    target = cache_root() / "datasets" / f"shapes-world-s{seed}-n{n}-{size}px"
    if (target / "meta.json").is_file():
        return target
    console.print(f"generating shapes-world (seed {seed}, {n} scenes, {size}px) -> {target}")
    generate(target, seed, n, size)
    return target
