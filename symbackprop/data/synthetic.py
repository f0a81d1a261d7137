"""Small seeded data sets for teaching and tests: XOR, two interleaved spirals, a noisy sine."""

from __future__ import annotations

import numbers

import numpy as np

from .errors import DataError

_XOR_CORNERS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)


def _check_size(owner: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise DataError(f"expected n to be a positive int, found {n!r}", where=owner)
    return int(n)


def _check_noise(owner: str, noise) -> float:
    if not isinstance(noise, numbers.Real) or not noise >= 0:
        raise DataError(f"expected noise to be a number at least 0, found {noise!r}", where=owner)
    return float(noise)


def _xor_targets(corners: np.ndarray) -> np.ndarray:
    return (corners[:, :1] != corners[:, 1:]).astype(np.float32)


def xor(n: int | None = None, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The XOR problem: ``X`` float32 ``(n, 2)``, targets ``y`` float32 ``(n, 1)`` in {0, 1}
    (ready for `sb.binary_cross_entropy`).

    With ``n=None``, the four corners of the unit square, exactly. With an ``n``, that many
    corners drawn at random, moved by Gaussian noise of standard deviation ``noise``; each
    keeps its corner's target.

    >>> from symbackprop.data import xor
    >>> X, y = xor()
    >>> X.tolist(), y.ravel().tolist()
    ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [0.0, 1.0, 1.0, 0.0])
    >>> X, y = xor(n=100, seed=3)
    >>> X.shape, y.shape, sorted(set(y.ravel().tolist()))
    ((100, 2), (100, 1), [0.0, 1.0])
    """
    if n is None:
        return _XOR_CORNERS.copy(), _xor_targets(_XOR_CORNERS)
    rng = np.random.default_rng(seed)
    corners = _XOR_CORNERS[rng.integers(0, 4, _check_size("xor", n))]
    jitter = rng.normal(0.0, _check_noise("xor", noise), corners.shape)
    return (corners + jitter).astype(np.float32), _xor_targets(corners)


def two_spirals(n: int = 200, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two spirals wound into each other, one per class: ``X`` float32 ``(n, 2)`` within about
    [-1, 1], labels ``y`` int64 ``(n,)`` in {0, 1}, half of each (class 0 gets the odd one
    out). Each point is moved by Gaussian noise of standard deviation ``noise``; the
    examples come shuffled.

    Not separable by a line: a classic test that a network learns a curved boundary.

    >>> import numpy as np
    >>> from symbackprop.data import two_spirals
    >>> X, y = two_spirals(n=101, seed=1)
    >>> X.shape, X.dtype, y.dtype, np.bincount(y).tolist()
    ((101, 2), dtype('float32'), dtype('int64'), [51, 50])
    """
    n = _check_size("two_spirals", n)
    noise = _check_noise("two_spirals", noise)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    # Points are spread evenly along the curve, radius growing with the angle: one and a half
    # turns out to radius 1. The second spiral is the first turned by half a turn.
    angle = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * np.pi
    radius = angle / (3 * np.pi)
    turned = angle + np.pi * labels
    points = np.stack([radius * np.cos(turned), radius * np.sin(turned)], axis=1)
    points += rng.normal(0.0, noise, points.shape)
    order = rng.permutation(n)
    return points[order].astype(np.float32), labels[order].astype(np.int64)


def noisy_sine(n: int = 100, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A regression problem: ``x`` float32 ``(n, 1)`` drawn uniformly from [-π, π] and sorted
    (so that a plot of the data or of a fit reads left to right), ``y = sin(x)`` plus Gaussian
    noise of standard deviation ``noise``, float32 ``(n, 1)``.

    >>> import numpy as np
    >>> from symbackprop.data import noisy_sine
    >>> x, y = noisy_sine(n=50, noise=0.0)
    >>> x.shape, y.shape, bool(np.allclose(y, np.sin(x), atol=1e-6))
    ((50, 1), (50, 1), True)
    """
    n = _check_size("noisy_sine", n)
    noise = _check_noise("noisy_sine", noise)
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-np.pi, np.pi, (n, 1)), axis=0)
    y = np.sin(x) + rng.normal(0.0, noise, x.shape)
    return x.astype(np.float32), y.astype(np.float32)
