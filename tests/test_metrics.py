"""Answer processing, exact match and boxes (the benchmarks' own rules are in tests/test_conformance_*.py)."""

from vlmlab.metrics import exact_match, normalize_answer


def test_normalization_cases():
    assert normalize_answer("  Two ") == "2"
    assert normalize_answer("A red Circle.") == "red circle"
    assert normalize_answer("dont") == "don't"
    assert normalize_answer("yes!") == "yes"
    assert normalize_answer("1,000") == "1000"


def test_exact_match():
    assert exact_match("The circle", "circle") == 1.0
    assert exact_match("circles", "circle") == 0.0
    assert exact_match("im", "i'm") == 0.0  # "im" is not in the official contraction table (vlmlab's own had it)
    assert exact_match("yall", "y'all") == 1.0 and exact_match("oclock", "o'clock") == 1.0


def test_parse_box():
    from vlmlab.metrics import parse_box

    assert parse_box("[1, 2, 30, 40]") == [1.0, 2.0, 30.0, 40.0]
    assert parse_box("the box is [ 1.5,2 ,3,4] ok") == [1.5, 2.0, 3.0, 4.0]
    assert parse_box("[1, 2, 3]") is None
    assert parse_box("circle") is None


def test_box_iou_edge_cases():
    from vlmlab.metrics import box_iou

    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0  # no overlap
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges
    assert box_iou([0, 0, 10, 10], [2, 2, 4, 4]) == 4 / 100  # containment
    assert box_iou([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0  # degenerate
    assert abs(box_iou([0, 0, 10, 10], [5, 0, 15, 10]) - 50 / 150) < 1e-12
    assert box_iou([10, 10, 0, 0], [0, 0, 10, 10]) == 1.0  # corners given in either order
