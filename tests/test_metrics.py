"""Answer normalization and exact match."""

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
