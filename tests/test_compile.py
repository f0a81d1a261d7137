"""Compiled code against the NumPy reference evaluator, for every op, float64 and float32.

The graphs are those of the gradient tests (every primitive appears in one): each is
compiled together with a scalar of it and the gradients of that scalar.
"""

import numpy as np
import pytest
from graph_builder import Builder
from test_gradients import GRADIENT_CASES

import symbackprop as sb
from symbackprop.graph import rebuild, topological_order

TOLERANCE = {"float64": dict(rtol=1e-9, atol=1e-11), "float32": dict(rtol=2e-4, atol=2e-5)}


def compiled_and_reference(name, dtype):
    builder = Builder()
    out, wrt = GRADIENT_CASES[name](builder)
    loss = builder.scalar(out)
    targets = [out, loss, *sb.grad(loss, wrt)]
    if dtype == "float32":
        targets = rebuild(targets, float_dtype="float32")
    inputs = [n for n in topological_order(targets) if n.op == "input"]
    arrays = [np.asarray(builder.feeds[n.label], dtype=n.dtype) for n in inputs]
    compiled = sb.compile(targets, inputs=inputs)
    return compiled(*arrays), sb.evaluate(targets, dict(zip(inputs, arrays)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_compiled_matches_the_evaluator(name, dtype):
    got, expected = compiled_and_reference(name, dtype)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, **TOLERANCE[dtype])
