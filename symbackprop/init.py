"""Parameter initialisers: ``(shape, rng, fan_in, fan_out) -> array``, seeded."""

from __future__ import annotations

import math

import numpy as np

from .errors import GraphError


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])  # convolution kernels: (in, out, kh, kw, ...)
    return shape[0] * receptive, shape[1] * receptive


def _glorot_limit(shape):
    fan_in, fan_out = _fans(shape)
    return math.sqrt(6.0 / (fan_in + fan_out))


INITIALIZERS = {
    "zeros": lambda shape, rng, **kw: np.zeros(shape),
    "ones": lambda shape, rng, **kw: np.ones(shape),
    "normal": lambda shape, rng, std=0.01, mean=0.0: rng.normal(mean, std, shape),
    "uniform": lambda shape, rng, low=-0.05, high=0.05: rng.uniform(low, high, shape),
    "glorot_uniform": lambda shape, rng: rng.uniform(-_glorot_limit(shape), _glorot_limit(shape), shape),
    "glorot_normal": lambda shape, rng: rng.normal(0.0, _glorot_limit(shape) / math.sqrt(3.0), shape),
    "he_uniform": lambda shape, rng: rng.uniform(-1, 1, shape) * math.sqrt(6.0 / _fans(shape)[0]),
    "he_normal": lambda shape, rng: rng.normal(0.0, math.sqrt(2.0 / _fans(shape)[0]), shape),
}


def initial_value(init, shape, seed, where, **init_args) -> np.ndarray:
    """The starting value of a parameter from an initialiser name, an array or a callable."""
    rng = np.random.default_rng(seed)
    if isinstance(init, str):
        if init not in INITIALIZERS:
            raise GraphError(f"{where}: unknown init {init!r}; expected one of {sorted(INITIALIZERS)}")
        try:
            return INITIALIZERS[init](shape, rng, **init_args)
        except TypeError as exc:
            raise GraphError(f"{where}: bad arguments {init_args} for init {init!r}: {exc}") from exc
    if callable(init):
        return init(shape, rng)
    return np.asarray(init)
