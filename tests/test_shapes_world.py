"""shapes-world: deterministic bytes, answers recomputed from the scene JSON, no ambiguity, splits, scoring, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmlab.cli import main
from vlmlab.data.shapes_world import PALETTE, generate
from vlmlab.data.tasks.shapes_world import ShapesWorld
from vlmlab.errors import DataError

N, SIZE = 60, 64
FAMILY = {
    "color": "perception",
    "shape": "perception",
    "exist": "perception",
    "count": "reasoning",
    "compare": "reasoning",
    "spatial": "reasoning",
    "conjunction": "reasoning",
    "ground": "grounding",
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("shapes")
    out = {"a": base / "a", "b": base / "b", "other": base / "other", "short": base / "short"}
    generate(out["a"], seed=3, n=N, size=SIZE)
    generate(out["b"], seed=3, n=N, size=SIZE)
    generate(out["other"], seed=4, n=N, size=SIZE)
    generate(out["short"], seed=3, n=N // 2, size=SIZE)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _scenes(root: Path) -> dict[str, dict]:
    return {s["scene_id"]: s for s in map(json.loads, (root / "scenes.jsonl").read_text().splitlines())}


def _records(root: Path) -> dict[str, list[dict]]:
    return {
        s: [json.loads(ln) for ln in (root / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "val", "test")
    }


def test_same_seed_gives_identical_bytes(dirs):
    a, b = _files(dirs["a"]), _files(dirs["b"])
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".png")]) == N
    assert all(a[k] == b[k] for k in a)


def test_other_seed_differs_and_scene_i_does_not_depend_on_n(dirs):
    a, other, short = _files(dirs["a"]), _files(dirs["other"]), _files(dirs["short"])
    assert sum(a[k] != other[k] for k in a if k.endswith(".png")) > N // 2
    assert all(short[k] == a[k] for k in short if k.endswith(".png"))


# ----- an independent re-computation of every answer from the objects ------------------------
def _centre(o):
    x1, y1, x2, y2 = o["box"]
    return (x1 + x2) / 2, (y1 + y2) / 2


def _clear(a, b, rel) -> bool | None:
    """a rel b, or None when box centres are closer than the documented margin (size / 8)."""
    (ax, ay), (bx, by) = _centre(a), _centre(b)
    d = {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[rel]
    return None if abs(d) < SIZE / 8 else d > 0


def _the(objs, color, shape):
    found = [o for o in objs if o["color"] == color and o["shape"] == shape]
    assert len(found) == 1, f"ambiguous or empty referring expression: the {color} {shape}"
    return found[0]


def _yn(flag):
    return "yes" if flag else "no"


def expected(rec: dict, objs: list[dict]):
    """The gold answer of a record recomputed from its scene's objects (asserts it is unambiguous)."""
    q, shapes, colors = rec["question"], [o["shape"] for o in objs], [o["color"] for o in objs]
    if m := re.fullmatch(r"What color is the (\w+)\?", q):
        assert shapes.count(m[1]) == 1
        return colors[shapes.index(m[1])]
    if m := re.fullmatch(r"What shape is the (\w+) object\?", q):
        assert colors.count(m[1]) == 1
        return shapes[colors.index(m[1])]
    if m := re.fullmatch(r"Is there a (\w+) shape and a (\w+)\?", q):
        pair = any(a is not b and a["color"] == m[1] and b["shape"] == m[2] for a in objs for b in objs)
        assert pair == (m[1] in colors and m[2] in shapes), "conjunction whose two readings disagree"
        return _yn(pair)
    if m := re.fullmatch(r"Is there a (\w+) (\w+)\?", q):
        return _yn(any(o["color"] == m[1] and o["shape"] == m[2] for o in objs))
    if m := re.fullmatch(r"How many (\w+)s are there\?", q):
        return str(shapes.count(m[1]))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", q):
        return str(colors.count(m[1]))
    if m := re.fullmatch(r"Are there more (\w+)s than (\w+)s\?", q):
        return _yn(shapes.count(m[1]) > shapes.count(m[2]))
    if m := re.fullmatch(r"Are there more (\w+) objects than (\w+) objects\?", q):
        return _yn(colors.count(m[1]) > colors.count(m[2]))
    if m := re.fullmatch(r"Is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+)\?", q):
        verdict = _clear(_the(objs, m[1], m[2]), _the(objs, m[4], m[5]), m[3])
        assert verdict is not None, f"spatial question too close to call: {q}"
        return _yn(verdict)
    if m := re.fullmatch(r"Give the box of the (\w+) (\w+)\.", q):
        return _the(objs, m[1], m[2])
    if m := re.fullmatch(r"Give the box of the shape (left of|right of|above|below) the (\w+) (\w+)\.", q):
        anchor = _the(objs, m[2], m[3])
        verdicts = [(_clear(o, anchor, m[1]), o) for o in objs if o is not anchor]
        assert all(v is not None for v, _ in verdicts), f"borderline object for: {q}"
        hits = [o for v, o in verdicts if v]
        assert len(hits) == 1, f"ambiguous: {q}"
        return hits[0]
    raise AssertionError(f"unknown question form: {q}")


def test_every_answer_matches_its_scene(dirs):
    scenes, seen = _scenes(dirs["a"]), set()
    for _split, records in _records(dirs["a"]).items():
        for rec in records:
            scene = scenes[rec["scene_id"]]
            assert rec["image"] == scene["image"] and rec["family"] == FAMILY[rec["category"]]
            assert rec["id"] == f"{rec['scene_id']}-{rec['category']}"
            gold = expected(rec, scene["objects"])
            if rec["category"] == "ground":
                box = [int(np.floor(v * 99 / SIZE + 0.5)) for v in gold["box"]]
                assert rec["box"] == box and rec["answer"] == f"[{box[0]}, {box[1]}, {box[2]}, {box[3]}]"
                assert all(0 <= v <= 99 for v in box)
                seen.add("relational" if " the shape " in rec["question"] else "direct")
            else:
                assert "box" not in rec and rec["answer"] == gold, rec
            seen.update({rec["category"], (rec["category"], rec["answer"])})
    assert set(FAMILY) <= seen and {"relational", "direct"} <= seen
    assert all((c, a) in seen for c in ("exist", "compare", "spatial", "conjunction") for a in ("yes", "no"))


def test_boxes_are_exact_inside_the_image_and_disjoint(dirs):
    for scene in _scenes(dirs["a"]).values():
        pixels = np.asarray(Image.open(dirs["a"] / scene["image"]).convert("RGB"))
        objs = scene["objects"]
        assert 1 <= len(objs) <= 6 and pixels.shape == (SIZE, SIZE, 3)
        for o in objs:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= SIZE and 0 <= y1 < y2 <= SIZE
            mask = np.all(pixels[y1:y2, x1:x2] == PALETTE[o["color"]], axis=-1)
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [0, 0, x2 - x1, y2 - y1]  # tight
            assert mask.sum() == o["area"]
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                ax1, ay1, ax2, ay2 = a["box"]
                bx1, by1, bx2, by2 = b["box"]
                assert ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1  # boxes never overlap


def test_splits_are_disjoint_by_scene(dirs):
    scenes = _scenes(dirs["a"])
    by_split = {s: {r["scene_id"] for r in recs} for s, recs in _records(dirs["a"]).items()}
    assert not (
        by_split["train"] & by_split["val"]
        or by_split["train"] & by_split["test"]
        or by_split["val"] & by_split["test"]
    )
    for split, ids in by_split.items():
        assert all(scenes[i]["split"] == split for i in ids)
    counts = {s: sum(sc["split"] == s for sc in scenes.values()) for s in by_split}
    assert counts == {"train": 48, "val": 6, "test": 6}


def test_task_loads_scores_boxes_and_labels_images(dirs):
    assert ShapesWorld.part_id == "shapes-world"  # registered by its decorator
    task = ShapesWorld()
    items = task.load("train", path=str(dirs["a"]))
    assert items and all(it.task == "shapes-world" and Path(it.image).is_file() for it in items)
    ground = next(it for it in items if it.category == "ground")
    x1, y1, x2, y2 = json.loads(ground.answer)
    assert task.score(ground.answer, ground) == 1.0
    assert task.score(f"the box is [{x1 + 1}, {y1}, {x2 + 1}, {y2}].", ground) == 1.0
    assert task.score(f"[{x2 + 5}, {y2 + 5}, {x2 + 30}, {y2 + 30}]", ground) == 0.0
    assert task.score("left side", ground) == 0.0 and task.score("[1, 2, 3]", ground) == 0.0
    count = next(it for it in items if it.category == "count")
    assert task.score(count.answer, count) == 1.0 and task.score("seven", count) == 0.0
    assert len(task.load("test", limit=3, path=str(dirs["a"]))) == 3

    labels = task.image_labels(items)
    scenes = {str((dirs["a"] / s["image"]).resolve()): s for s in _scenes(dirs["a"]).values()}
    assert set(labels) == {it.image for it in items}
    for image, lab in labels.items():
        objs = scenes[image]["objects"]
        assert lab["count"] == str(len(objs))
        kinds = {f"has_{o['color']}_{o['shape']}" for o in objs}
        assert {k for k, v in lab.items() if k.startswith("has_") and v == "yes"} == kinds
        assert sum(k.startswith("has_") for k in lab) == 24
        if "largest_shape" in lab:
            big = max(objs, key=lambda o: o["area"])
            assert sum(o["area"] == big["area"] for o in objs) == 1
            assert (lab["largest_shape"], lab["largest_color"]) == (big["shape"], big["color"])
    assert sum("largest_shape" in lab for lab in labels.values()) > len(labels) // 2


def test_image_objects_are_the_scenes_exact_boxes(dirs):
    task = ShapesWorld()
    items = task.load("train", path=str(dirs["a"]))
    objects = task.image_objects(items)
    scenes = {str((dirs["a"] / s["image"]).resolve()): s for s in _scenes(dirs["a"]).values()}
    assert set(objects) == {it.image for it in items}
    for image, entry in objects.items():
        assert entry["size"] == (SIZE, SIZE)
        assert entry["objects"] == [
            {"box": o["box"], "color": o["color"], "shape": o["shape"]} for o in scenes[image]["objects"]
        ]


def test_a_yaml_task_over_shapes_world_hands_its_format_the_objects_and_the_image_placement(dirs, tmp_path):
    """A declarative task forwards what a vision-pretrain stage and the prompt layout ask its format: the dense
    objective's objects (a YAML task over shapes-world gave none) and whether records place the image (a YAML
    task over llava-json lost it)."""
    from vlmlab.registry import TASKS

    task = TASKS.get("shapes-perception")()
    items = task.load("train", path=str(dirs["a"]))
    assert task.image_objects(items) == ShapesWorld().image_objects(items) and task.image_objects(items)
    assert not task.image_position_from_data
    (tmp_path / "mine.yaml").write_text("task: my-llava\nformat: llava-json\n")
    from vlmlab.data.tasks.declarative import DeclarativeTask, read_spec

    spec = read_spec(tmp_path / "mine.yaml")
    llava = type("MyLlava", (DeclarativeTask,), {"spec": spec})()
    assert llava.image_position_from_data


def test_chat_task_makes_a_conversation_per_scene_with_every_box_question(dirs):
    """shapes-world-chat: a scene's asked questions and a box turn per nameable object, one sample per scene."""
    from vlmlab.data.shapes_world import box_text_coords, unique_name
    from vlmlab.data.tasks.shapes_chat import MAX_TURNS, ShapesWorldChat

    chat = ShapesWorldChat().load("train", path=str(dirs["a"]))
    single = ShapesWorld().load("train", path=str(dirs["a"]))
    scenes = {str((dirs["a"] / s["image"]).resolve()): s for s in _scenes(dirs["a"]).values()}
    assert len(chat) == len({it.image for it in single})  # one sample per train scene
    asked = {(it.image, it.question): it.answer for it in single}
    boxes = 0
    for item in chat:
        turns = dict(item.turns)
        assert len(item.turns) <= MAX_TURNS and len(turns) == len(item.turns)  # no question twice
        assert (item.question, item.answer) == item.turns[0]
        scene = scenes[item.image]
        for question, answer in turns.items():
            if (item.image, question) in asked:  # the generator's own question keeps its answer
                assert answer == asked[(item.image, question)]
            else:  # an added box question: a named object's (or a relation's) exact box
                assert question.startswith("Give the box of the ") and re.fullmatch(r"\[\d+, \d+, \d+, \d+\]", answer)
        for obj in scene["objects"]:
            name = unique_name(obj, scene["objects"])
            question = f"Give the box of the {name}."
            if name and question in turns:
                assert json.loads(turns[question]) == box_text_coords(obj["box"], SIZE)
        boxes += sum(q.startswith("Give the box") for q in turns)
    assert boxes / len(chat) > 1.5  # several boxes per image (the single-turn data has at most one)
    again = ShapesWorldChat().load("train", path=str(dirs["a"]))
    assert [it.turns for it in again] == [it.turns for it in chat]  # the order is seeded per scene


def test_boxes_task_asks_every_nameable_objects_box_as_the_grounding_questions_do(dirs):
    """shapes-world-boxes: one single-turn item per direct or relational box question of each train scene; the
    generator's own grounding questions are among them with the same answers, in the run's frame."""
    from vlmlab.config import DataSource, ImageConfig
    from vlmlab.data.shapes_world import box_text_coords, unique_name
    from vlmlab.data.sources import load_source

    image = ImageConfig(size=SIZE, geometry="resize")
    _, boxes = load_source(DataSource(task="shapes-world-boxes", split="train", path=str(dirs["a"])), "k", image)
    _, single = load_source(DataSource(task="shapes-world", split="train", path=str(dirs["a"])), "k", image)
    asked = {(it.image, it.question): it.answer for it in single if it.category == "ground"}
    mine = {(it.image, it.question): it.answer for it in boxes}
    assert len(mine) == len(boxes) and set(asked) <= set(mine)  # no question twice; every asked one included
    assert all(mine[k] == a for k, a in asked.items())
    assert len(boxes) > 2 * len(asked)  # several per scene where the generator asks one
    scenes = {str((dirs["a"] / s["image"]).resolve()): s for s in _scenes(dirs["a"]).values()}
    assert {scenes[it.image]["split"] for it in boxes} == {"train"}
    for it in boxes:
        objects = scenes[it.image]["objects"]
        named = {f"Give the box of the {unique_name(o, objects)}.": o for o in objects if unique_name(o, objects)}
        if it.question in named:
            assert json.loads(it.answer) == box_text_coords(named[it.question]["box"], SIZE)
        else:
            assert it.question.startswith("Give the box of the shape ")  # a relational one
    assert (
        len(load_source(DataSource(task="shapes-world-boxes", split="val", limit=5, path=str(dirs["a"])), "k")[1]) == 5
    )


def test_loader_errors_name_the_path_and_line(dirs, tmp_path):
    task = ShapesWorld()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere"))):
        task.load("train", path=str(tmp_path / "nowhere"))
    bad = tmp_path / "bad"
    bad.mkdir()
    good = (dirs["a"] / "val.jsonl").read_text().splitlines()[0]
    (bad / "val.jsonl").write_text(good + "\n{not json\n")
    with pytest.raises(DataError, match=re.escape(f"{bad / 'val.jsonl'}:2: not valid JSON")):
        task.load("val", path=str(bad))


def test_cli_writes_a_dataset_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["data", "shapes-world", "--seed", "1", "--n", "12", "--out", str(out), "--size", "48"]) == 0
    assert "wrote 12 scenes" in capsys.readouterr().err
    assert len(list((out / "images").glob("*.png"))) == 12
    assert all((out / f).is_file() for f in ("scenes.jsonl", "train.jsonl", "val.jsonl", "test.jsonl", "meta.json"))
    assert Image.open(out / "images" / "000000.png").size == (48, 48)
    assert main(["data", "shapes-world", "--seed", "1", "--n", "12", "--out", str(out)]) == 2  # not empty
    bad = [
        "data",
        "shapes-world",
        "--seed",
        "1",
        "--n",
        "4",
        "--out",
        str(tmp_path / "x"),
        "--split-fractions",
        "0.5",
        "0.5",
        "0.5",
    ]
    assert main(bad) == 2 and not (tmp_path / "x").exists()
