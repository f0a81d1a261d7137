"""Counter-based random numbers inside graphs: seeded, reproducible, the same when compiled.

A ``random_uniform`` node holds no state. Its values are a hash of ``(seed, counter,
element index)``: the seed is an attribute, the counter a scalar tensor operand (the
training step number, :func:`step_number`, unless another is given), the element index
the flat row-major position in the output. Evaluating the node twice with the same
counter gives the same numbers; the next step gives new ones. The compiled kernel
(``codegen``) computes the very same bits as :func:`uniform_values`, the NumPy reference.

The generator is SplitMix64 (Steele, Lea and Flood, 2014) used as a counter-based hash:

- ``key = mix64(mix64(seed ⊕ SEED_SALT) + bits(counter)·γ)``, once per node; ``bits`` is
  the IEEE-754 pattern of the counter as a float64, so every value (NaN included) has a
  defined hash and no float-to-int conversion can overflow;
- element ``i`` is ``h = mix64(key + (i + 1)·γ)``, splitmix64's ``i``-th output from the
  state ``key``: one multiply-add and the finaliser, all wrapping uint64 arithmetic,
  which vectorises;
- float32 takes the top 24 bits, ``(h >> 40)·2⁻²⁴``; float64 the top 53, ``(h >> 11)·2⁻⁵³``.
  Both are exact, lie in [0, 1), and the float32 value is the float64 one truncated to 24
  bits, so ``u ≥ r`` draws the same mask in both precisions for any threshold ``r`` that
  float32 holds exactly (0.5, 0.25, ...).

Because a node is its ``(seed, shape, dtype, counter)``, hash-consing makes two calls with
equal arguments one node with one value, by design: give every independent draw its own
seed. The first rows of a draw with the batch dimension do not depend on the batch size.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import GraphError
from .graph import Tensor, const, input, make_node
from .shapes import check_dtype, check_shape

MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: 2**64 divided by the golden ratio, made odd
SEED_SALT = 0x6A09E667F3BCC909  # the first 64 bits of the fractional part of sqrt(2)
MIX_STEPS = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB))  # (xor-shift, multiplier) pairs
FINAL_SHIFT = 31
FRACTION_BITS = {"float32": 24, "float64": 53}  # the significand bits of each float dtype


def mix64(z):
    """splitmix64's finaliser, a bijection of uint64 with full avalanche.

    Works on Python ints in ``[0, 2**64)`` and on NumPy uint64 arrays (wrapping).

    >>> hex(mix64(1))
    '0x5692161d100b05e5'
    """
    for shift, multiplier in MIX_STEPS:
        z = ((z ^ (z >> shift)) * multiplier) & MASK
    return z ^ (z >> FINAL_SHIFT)


def seed_key(seed: int) -> int:
    """The seed's part of every key, a compile-time constant of a node."""
    return mix64(seed ^ SEED_SALT)


def stream_base(seed: int, counter_bits: int) -> int:
    """``key + γ`` for a seed and the float64 bits of a counter: element ``i`` hashes
    ``stream_base + i·γ``."""
    key = mix64((seed_key(seed) + counter_bits * GAMMA) & MASK)
    return (key + GAMMA) & MASK


def counter_bits(counter) -> int:
    """The IEEE-754 bits of a float counter, widened to float64 (exact for float32)."""
    array = np.asarray(counter)
    if array.dtype == object:
        raise GraphError(
            f"random_uniform: the counter is the symbolic {counter!r}; a draw is a hash of numbers and "
            "cannot be written out over symbols (as formula(..., expand=True) does)"
        )
    if array.shape != () or array.dtype.kind != "f":
        raise GraphError(f"random_uniform: the counter must be a float scalar, got {counter!r}")
    return int(array.astype(np.float64).view(np.uint64))


def uniform_values(shape, dtype: str, seed: int, counter) -> np.ndarray:
    """The values of ``random_uniform`` for a concrete shape: the reference the compiled code
    matches bit for bit.

    >>> uniform_values((2, 3), "float32", seed=0, counter=1.0).round(3)
    array([[0.086, 0.599, 0.566],
           [0.731, 0.231, 0.287]], dtype=float32)
    """
    size = int(np.prod(shape, dtype=np.int64))
    index = np.arange(size, dtype=np.uint64)
    hashed = mix64(index * np.uint64(GAMMA) + np.uint64(stream_base(seed, counter_bits(counter))))
    bits = FRACTION_BITS[dtype]
    fraction = (hashed >> np.uint64(64 - bits)).astype(dtype)
    return (fraction * np.asarray(2.0**-bits, dtype=dtype)).reshape(shape)


def check_seed(seed, where: str) -> int:
    """The seed as an int in ``[0, 2**64)``, or a GraphError naming ``where``.

    Checked before a node is made: ``True`` or ``3.0`` would otherwise find the interned
    node of seed 1 or 3, since they compare equal."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed <= MASK:
        raise GraphError(f"{where}: seed must be an int in [0, 2**64), got {seed!r}")
    return int(seed)


def step_number() -> Tensor:
    """The number of the training step being taken, from 1: the float64 scalar input ``step``.

    It is the same node as the step number Adam's bias correction reads (nodes are
    hash-consed). A compiled training step (:func:`symbackprop.compile_step`) feeds it on
    every step and every minibatch of an epoch; elsewhere it is an ordinary input to feed.

    >>> import symbackprop as sb
    >>> sb.step_number()
    <Tensor step () float64>
    """
    return input("step", (), "float64")


def random_uniform(shape, seed: int, counter: Tensor | float | None = None, dtype: str = "float32") -> Tensor:
    """Uniform random numbers in [0, 1), a function of ``(seed, counter)`` and the element index.

    ``shape`` may hold ``None``, the batch size. ``counter`` is a float scalar tensor or a
    number; by default the step number (:func:`step_number`), so a training step draws
    new numbers every step. Equal arguments give the same node and the same numbers.

    >>> import symbackprop as sb
    >>> u = sb.random_uniform((None, 3), seed=7)
    >>> u
    <Tensor random_uniform(...) (n, 3) float32>
    >>> x = sb.input("x", (None, 3))
    >>> values = sb.evaluate(u + 0 * x, {x: np.zeros((4, 3)), "step": 1.0})
    >>> values.shape, bool(((values >= 0) & (values < 1)).all())
    ((4, 3), True)
    """
    where = "random_uniform"
    shape = check_shape(shape, where)
    dtype = check_dtype(dtype, where)
    if counter is None:
        counter = step_number()
    elif not isinstance(counter, Tensor):
        if not isinstance(counter, numbers.Real) or isinstance(counter, bool):
            raise GraphError(f"{where}: counter must be a float scalar tensor or a number, got {counter!r}")
        counter = const(float(counter), "float64")
    return make_node("random_uniform", [counter], shape=shape, dtype=dtype, seed=check_seed(seed, where))


__all__ = ["mix64", "random_uniform", "step_number", "uniform_values"]
