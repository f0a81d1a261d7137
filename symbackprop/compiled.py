"""Entry points to the native back end (the ``codegen`` package).

The front end never needs LLVM: ``codegen`` is imported only when something is compiled,
so graphs, gradients, formulas and the reference evaluator work without it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .graph import Tensor


def compile(  # noqa: A001
    outputs, inputs: Sequence[Tensor] = (), *, fast_math: bool = True, rewrite: bool = True, profile: bool = False
):
    """Compile tensors to native code; returns a function of one array per input.

    Parameters are read from their ``.value`` at each call. Float arguments of another
    precision and non-contiguous arrays are converted (copied); wrong shapes, dtypes, batch
    sizes and out-of-range labels raise a :class:`GraphError` before any native code runs.
    ``fast_math=False`` keeps IEEE evaluation order (for gradient checks); ``rewrite=False``
    skips :func:`symbackprop.simplify`; ``profile=True`` times every kernel call, shown by
    ``f.profile`` (see docs/compiling.md, "Where the time goes").

    >>> import numpy as np, symbackprop as sb
    >>> x = sb.input("x", (None, 3))
    >>> w = sb.param("w", (3,), init=np.array([1.0, 2.0, 3.0]))
    >>> f = sb.compile([sb.tanh(x @ w).sum(), *sb.grad((x @ w).sum(), [w])], inputs=[x])
    >>> loss, gw = f(np.ones((2, 3), dtype=np.float32))
    >>> gw.tolist()
    [2.0, 2.0, 2.0]
    """
    from codegen.compile import CompiledFunction

    return CompiledFunction(outputs, inputs, fast_math=fast_math, rewrite=rewrite, profile=profile)


def compile_step(
    loss,
    inputs: Sequence[Tensor],
    params: Sequence[Tensor],
    optimizer,
    *,
    fast_math: bool = True,
    profile: bool = False,
):
    """Compile one training step (forward, backward, optimizer update) to native code.

    Returns ``step``: ``step(*batch)`` runs one step on a minibatch and returns its loss,
    updating the params' ``.value`` arrays in place; ``step.epoch(*data, batch_size=32,
    shuffle=True, seed=0)`` runs every minibatch of a data set in one native call and
    returns the mean loss. ``optimizer`` is one of :mod:`symbackprop.optim`. With
    ``profile=True``, ``step.profile`` shows the time spent in each kernel.

    >>> import numpy as np, symbackprop as sb
    >>> x, y = sb.input("x", (None, 1)), sb.input("y", (None, 1))
    >>> w = sb.param("w", (1, 1))
    >>> step = sb.compile_step(sb.mse(x @ w, y), [x, y], [w], sb.optim.SGD(lr=0.1))
    >>> X = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    >>> for epoch in range(30):
    ...     loss = step.epoch(X, 3 * X, batch_size=16, seed=epoch)
    >>> round(float(w.value[0, 0]), 3)
    3.0
    """
    from codegen.step import CompiledStep

    return CompiledStep(loss, inputs, params, optimizer, fast_math=fast_math, profile=profile)
