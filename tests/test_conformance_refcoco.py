"""RefCOCO/+/g: Acc@IoU>=0.5 in the original image's pixels, the refer API's splits, the toolkit's pickles.

The worked case (by hand): a 640 x 427 COCO image letterboxed to 64 px: scale 0.1, the image becomes
64 x 43 (round(42.7)), pasted at left 0, top (64 - 43) // 2 = 10; its real vertical scale is 43/427.
The gold box [x, y, w, h] = [300, 200, 21, 15] (a small object) is [300, 200, 321, 215] in pixels; in
the processed image, in 0-100 units: x 46.875..50.156, y 47.095..49.455; as the 0-99 grid answer
floor(u * 0.99 + 0.5): [46, 47, 50, 49].
"""

from __future__ import annotations

import json
import pickle

import pytest
from PIL import Image

from vlmlab.config import DataSource, ImageConfig
from vlmlab.data.sources import load_source
from vlmlab.errors import DataError
from vlmlab.metrics import box_hit, pixel_box_hit

GOLD = (300.0, 200.0, 321.0, 215.0)
SIZE = (640, 427)
LETTERBOX = (64, "letterbox-square")


@pytest.mark.parametrize(
    "prediction, grid_hit, pixel_hit",
    [
        # the gold's own grid answer: back in pixels [297.37, 202.41, 323.23, 215.25] (u = c * 100/99, then
        # x = u * 0.64 / 0.1, y = (u * 0.64 - 10) / (43/427)); IoU with the gold 264.4 / 382.7 = 0.69
        ("[46, 47, 50, 49]", 1.0, 1.0),
        # one grid row lower on top: grid IoU 4/8 = 0.5 (a hit); in pixels y1 = 208.83, so the box is
        # [297.37, 208.83, 323.23, 215.25]: intersection 21 x 6.17 = 129.6, union 166.0 + 315 - 129.6 = 351.4,
        # IoU 0.37 (a miss): the grid's quantization flatters small boxes
        ("[46, 48, 50, 49]", 1.0, 0.0),
        # a box on the letterbox padding (rows 0-10 of 64 are grey): y maps above the image, no overlap
        ("[46, 0, 50, 10]", 0.0, 0.0),
        ("no box here", 0.0, 0.0),
    ],
)
def test_small_box_under_letterbox_is_scored_in_pixels(prediction, grid_hit, pixel_hit):
    assert box_hit(prediction, "[46, 47, 50, 49]") == grid_hit
    assert pixel_box_hit(prediction, GOLD, SIZE, LETTERBOX) == pixel_hit


def test_resize_maps_each_axis_back():
    # resize to 64: the grid box [0, 0, 99, 99] is the whole image [0, 0, 640, 427]; gold half of it:
    # [0, 0, 320, 427] -> IoU 0.5 exactly (a hit); [0, 0, 318, 427] -> 0.497 (a miss)
    assert pixel_box_hit("[0, 0, 99, 99]", (0, 0, 320, 427), SIZE, (64, "resize")) == 1.0
    assert pixel_box_hit("[0, 0, 99, 99]", (0, 0, 318, 427), SIZE, (64, "resize")) == 0.0


def _refcoco(root, refs_name="refs.json", splits=("testA", "testB", "train")):
    (root / "images").mkdir(parents=True)
    Image.new("RGB", SIZE).save(root / "images" / "a.jpg")
    (root / "instances.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "width": SIZE[0], "height": SIZE[1]}],
                "annotations": [{"id": 10, "image_id": 1, "bbox": [300, 200, 21, 15], "category_id": 1}],
                "categories": [{"id": 1, "name": "cup"}],
            }
        )
    )
    refs = [
        {
            "ref_id": i,
            "ann_id": 10,
            "image_id": 1,
            "category_id": 1,
            "split": split,
            "sent_ids": [i],
            "sentences": [{"tokens": ["the", "cup"], "raw": "The cup", "sent_id": i, "sent": "the cup"}],
            "file_name": "a_10.jpg",
        }
        for i, split in enumerate(splits)
    ]
    if refs_name.endswith(".p"):
        with open(root / refs_name, "wb") as fh:
            pickle.dump(refs, fh, protocol=0)  # what the toolkit's Python 2 cPickle wrote by default
    else:
        (root / refs_name).write_text(json.dumps(refs))
    return root


def test_refcoco_task_scores_in_pixels_and_test_is_testA_and_testB(tmp_path):
    root = _refcoco(tmp_path / "refcoco")
    source = DataSource(task="refcoco", split="test", path=str(root))
    task, items = load_source(source, "data.eval.0", ImageConfig(size=64, geometry="letterbox-square"))
    assert [it.item_id for it in items] == ["test-0-0", "test-1-0"]  # testA ∪ testB, as the refer API's "test"
    assert items[0].answer == "[46, 47, 50, 49]" and items[0].frame == (64, "letterbox-square")
    assert task.score("[46, 47, 50, 49]", items[0]) == 1.0 and task.score("[46, 48, 50, 49]", items[0]) == 0.0
    _, [train] = load_source(source.model_copy(update={"split": "train"}), "data.eval.0", ImageConfig(size=64))
    assert train.item_id == "train-2-0"


def test_the_toolkits_pickle_is_read_without_running_code(tmp_path):
    root = _refcoco(tmp_path / "refcoco", "refs(unc).p")
    _, items = load_source(DataSource(task="refcoco", split="testA", path=str(root)), "data.eval.0", ImageConfig())
    assert [it.question for it in items] == ["Give the box of: the cup"]

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil"
    _refcoco(evil)
    (evil / "refs.json").unlink()
    with open(evil / "refs(unc).p", "wb") as fh:
        pickle.dump([Payload()], fh)
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: not a plain-data refs pickle \(it names builtins.print"):
        load_source(DataSource(task="refcoco", split="testA", path=str(evil)), "data.eval.0", ImageConfig())
    with open(evil / "refs(umd).p", "wb") as fh:
        pickle.dump([], fh)
    with pytest.raises(DataError, match=r"several refs pickles \(refs\(umd\)\.p, refs\(unc\)\.p\)"):
        load_source(DataSource(task="refcoco", split="testA", path=str(evil)), "data.eval.0", ImageConfig())


def test_convert_refs_writes_the_json_the_loader_reads(tmp_path, capsys):
    from vlmlab.cli import main

    root = _refcoco(tmp_path / "refcoco", "refs(unc).p")
    assert main(["data", "convert-refs", str(root / "refs(unc).p"), str(tmp_path / "refs.json")]) == 0
    refs = json.loads((tmp_path / "refs.json").read_text())
    assert [r["split"] for r in refs] == ["testA", "testB", "train"] and refs[0]["sentences"][0]["sent"] == "the cup"
    assert "wrote 3 refs" in capsys.readouterr().err
