"""compute_complexity and ComplexityMapping (PySR's complexity_of_* parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from ttsr_bridge.expr.complexity import ComplexityMapping, compute_complexity
from ttsr_bridge.expr.parser import parse_tree


def test_default_is_length(make_tree):
    rng = np.random.default_rng(0)
    for _ in range(50):
        e = make_tree(rng, int(rng.integers(0, 10)))
        assert compute_complexity(e) == len(e)
        assert compute_complexity(e, ComplexityMapping()) == len(e)
    assert ComplexityMapping().is_default
    assert ComplexityMapping.from_pysr({"sin": 1}, 1, 1).is_default


def test_custom_mapping():
    e = parse_tree("sin(x1) + (2.5 * x2)")
    m = ComplexityMapping.from_pysr({"sin": 3, "+": 2}, 2, [1, 0.5])
    # sin 3 + "+" 2 + x1 1 + "*" 1 + const 2 + x2 0.5 = 9.5 -> 10 (round half to even)
    assert compute_complexity(e, m) == 10
    m2 = ComplexityMapping.from_pysr({"sin": 3}, 2, [1, 0.5])  # 8.5 -> 8
    assert compute_complexity(e, m2) == 8
    assert not m.is_default
    assert ComplexityMapping({"cos": 2}).complexity_of_operators == (("cos", 2),)


def test_mapping_validation():
    with pytest.raises(KeyError):
        ComplexityMapping((("nope", 1),))
    with pytest.raises(ValueError):
        ComplexityMapping(complexity_of_constants=float("nan"))
    with pytest.raises(ValueError):
        ComplexityMapping(complexity_of_variables=())
    with pytest.raises(ValueError):
        compute_complexity(parse_tree("x3 * 2.0"), ComplexityMapping.from_pysr(None, 2, [1, 1]))
