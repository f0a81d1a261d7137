"""A builder of small random graphs with their feeds, shared by the test modules.

A plain module rather than a conftest.py fixture: tests/codegen has a conftest.py of its
own, and two rootless conftest modules with one basename cannot be collected together.
"""

import numpy as np

import symbackprop as sb

BATCH = 4  # the batch size fed wherever a shape holds None


def concrete(shape):
    return tuple(BATCH if d is None else d for d in shape)


class Builder:
    """Makes float64 inputs and params with random values and collects the feeds."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.feeds = {}

    def values(self, shape, low=-1.5, high=1.5, gap=0.0):
        """Uniform values in [low, high]; with ``gap``, magnitudes at least ``gap`` (away from kinks at 0)."""
        values = self.rng.uniform(low, high, concrete(shape))
        if gap:
            values = np.sign(values) * (gap + np.abs(values))
        return values

    def input(self, name, shape, low=-1.5, high=1.5, gap=0.0, dtype="float64"):
        x = sb.input(name, shape, dtype)
        self.feeds[name] = self.values(shape, low, high, gap).astype(dtype)
        return x

    def labels(self, name, shape, depth):
        x = sb.input(name, shape, "int64")
        self.feeds[name] = self.rng.integers(0, depth, concrete(shape))
        return x

    def param(self, name, shape, low=-1.5, high=1.5, gap=0.0):
        return sb.param(name, shape, init=self.values(shape, low, high, gap), dtype="float64")

    def scalar(self, t):
        """A scalar that depends on every element of ``t`` with distinct weights, nonlinearly."""
        p = self.input(f"weights{len(self.feeds)}", t.shape)
        return (p * t + t * t).sum()
