"""Box answers follow the image through resize / letterbox: project_box, format_box, and a drawn-box round trip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vlmlab.config import ImageConfig
from vlmlab.data.images import format_box, project_box, to_array
from vlmlab.data.items import VQAItem
from vlmlab.data.shapes_world import box_text_coords
from vlmlab.data.sources import fit_box_answers
from vlmlab.metrics import parse_box


def test_whole_wide_image_letterboxed_to_a_square():
    # 200 x 100 -> 64: scale 0.32, pasted 64 x 32 at top 16, so rows 16..48 of 64 = 25..75 of 100
    assert project_box((0, 0, 200, 100), 200, 100, 64, "letterbox-square") == [0.0, 25.0, 100.0, 75.0]
    assert format_box([0.0, 25.0, 100.0, 75.0]) == "[0, 25, 99, 74]"
    # 200 x 100 -> 50: pasted 50 x 25 at top 12 (the odd pixel of padding goes below): rows 12..37 = 24..74
    assert project_box((0, 0, 200, 100), 200, 100, 50, "letterbox-square") == [0.0, 24.0, 100.0, 74.0]
    assert format_box(project_box((0, 0, 200, 100), 200, 100, 50, "letterbox-square")) == "[0, 24, 99, 73]"
    assert format_box(project_box((0, 0, 100, 200), 100, 200, 64, "letterbox-square")) == "[25, 0, 74, 99]"


def test_resize_is_the_relative_box():
    assert project_box((0, 0, 200, 100), 200, 100, 64, "resize") == [0.0, 0.0, 100.0, 100.0]
    assert format_box(project_box((0, 0, 200, 100), 200, 100, 64, "resize")) == "[0, 0, 99, 99]"
    assert project_box((50, 25, 150, 75), 200, 100, 32, "resize") == [25.0, 25.0, 75.0, 75.0]
    with pytest.raises(ValueError):
        project_box((0, 0, 1, 1), 2, 2, 2, "crop")


def test_format_box_clamps_and_matches_shapes_world():
    assert format_box([-5, -0.1, 120, 100.4]) == "[0, 0, 99, 99]"
    for size in (32, 64, 100, 224):
        for v in range(size + 1):  # a square image: both geometries give shapes-world's own box text
            for geometry in ("resize", "letterbox-square"):
                expected = box_text_coords([v, v, v, v], size)
                assert parse_box(format_box(project_box((v, v, v, v), size, size, size, geometry))) == expected


@pytest.mark.parametrize("size,rect", [(100, (30, 20, 89, 59)), (64, (5, 40, 60, 79)), (48, (0, 0, 119, 10))])
def test_drawn_rectangle_round_trip_through_letterbox(size, rect):
    img = Image.new("RGB", (120, 80), (255, 255, 255))
    ImageDraw.Draw(img).rectangle(rect, fill=(255, 0, 0))  # inclusive corners: pixels rect[0]..rect[2]
    arr = to_array(img, size, "letterbox-square").astype(int)
    red = (arr[..., 0] > 180) & (arr[..., 1] < 120) & (arr[..., 2] < 120)
    ys, xs = np.nonzero(red)
    seen = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # pixel extent, right/bottom exclusive
    seen_units = box_text_coords([int(v) for v in seen], size)
    box = (rect[0], rect[1], rect[2] + 1, rect[3] + 1)
    projected = parse_box(format_box(project_box(box, 120, 80, size, "letterbox-square")))
    assert all(abs(p - s) <= 1 for p, s in zip(projected, seen_units)), (projected, seen_units)


def test_fit_box_answers_rewrites_only_boxed_items():
    boxed = VQAItem("1", "t", "all", "where?", "[0, 0, 99, 99]", "a.png", box=(0, 0, 200, 100), image_size=(200, 100))
    plain = VQAItem("2", "t", "all", "what?", "red", "a.png")
    out = fit_box_answers([boxed, plain], ImageConfig(size=64, geometry="letterbox-square"))
    assert [it.answer for it in out] == ["[0, 25, 99, 74]", "red"] and out[1] is plain
    with pytest.raises(ValueError, match="needs the image_size"):
        VQAItem("3", "t", "all", "q", "a", "a.png", box=(0, 0, 1, 1))
