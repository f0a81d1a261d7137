"""symbackprop: neural networks as symbolic tensor graphs, gradients derived by SymPy.

>>> import numpy as np, symbackprop as sb
>>> x = sb.input("x", (None, 2))
>>> w = sb.param("w", (2, 1), init=np.ones((2, 1)))
>>> loss = sb.mse(x @ w, sb.const(np.zeros((1, 1))) + 0 * (x @ w))
>>> gw = sb.grad(loss, [w])[0]
>>> gw.shape
(2, 1)
"""

from . import callbacks, checkpoint, data, metrics, nn, ops, optim, schedules
from .autodiff import grad
from .compiled import compile, compile_step
from .errors import GraphError, MissingRuleError
from .evaluate import evaluate
from .formula import Formula, formula
from .functions import (
    abs,
    broadcast_to,
    cast,
    concat,
    exp,
    function,
    gather,
    leaky_relu,
    log,
    log_softmax,
    logsumexp,
    matmul,
    max,
    maximum,
    mean,
    minimum,
    one_hot,
    relu,
    reshape,
    sigmoid,
    softmax,
    softplus,
    sqrt,
    stop_gradient,
    sum,
    tanh,
    transpose,
    where,
)
from .gradcheck import GradientCheckError, check_grads
from .graph import Tensor, batch_size, const, input, param
from .losses import binary_cross_entropy, huber, l1_penalty, l2_penalty, mae, mse, softmax_cross_entropy
from .random import random_uniform, step_number
from .rewrite import Rewritten, simplify
from .text import to_text, verify
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "Formula",
    "GradientCheckError",
    "GraphError",
    "MissingRuleError",
    "Rewritten",
    "Tensor",
    "Trainer",
    "abs",
    "batch_size",
    "binary_cross_entropy",
    "broadcast_to",
    "callbacks",
    "cast",
    "check_grads",
    "checkpoint",
    "compile",
    "compile_step",
    "concat",
    "const",
    "data",
    "evaluate",
    "exp",
    "formula",
    "function",
    "gather",
    "grad",
    "huber",
    "input",
    "l1_penalty",
    "l2_penalty",
    "leaky_relu",
    "log",
    "log_softmax",
    "logsumexp",
    "mae",
    "matmul",
    "max",
    "maximum",
    "mean",
    "metrics",
    "minimum",
    "mse",
    "nn",
    "one_hot",
    "ops",
    "optim",
    "param",
    "random_uniform",
    "relu",
    "reshape",
    "schedules",
    "sigmoid",
    "simplify",
    "softmax",
    "softmax_cross_entropy",
    "softplus",
    "sqrt",
    "step_number",
    "stop_gradient",
    "sum",
    "tanh",
    "to_text",
    "transpose",
    "verify",
    "where",
]
