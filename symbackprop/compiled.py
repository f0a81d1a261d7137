"""Entry points to the native back end (the ``codegen`` package).

The front end never needs LLVM: ``codegen`` is imported only when something is compiled,
so graphs, gradients, formulas and the reference evaluator work without it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .graph import Tensor


def compile(outputs, inputs: Sequence[Tensor] = (), *, fast_math: bool = True, rewrite: bool = True):  # noqa: A001
    """Compile tensors to native code; returns a function of one array per input.

    Parameters are read from their ``.value`` at each call. Float arguments of another
    precision and non-contiguous arrays are converted (copied); wrong shapes, dtypes, batch
    sizes and out-of-range labels raise a :class:`GraphError` before any native code runs.
    ``fast_math=False`` keeps IEEE evaluation order (for gradient checks); ``rewrite=False``
    skips :func:`symbackprop.simplify`.

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 3))
    >>> w = sb.param("w", (3,), init=np.array([1.0, 2.0, 3.0]))
    >>> f = sb.compile([sb.tanh(x @ w).sum(), *sb.grad((x @ w).sum(), [w])], inputs=[x])
    >>> loss, gw = f(np.ones((2, 3), dtype=np.float32))
    >>> gw.tolist()
    [2.0, 2.0, 2.0]
    """
    from codegen.compile import CompiledFunction

    return CompiledFunction(outputs, inputs, fast_math=fast_math, rewrite=rewrite)
