"""The fully connected layer."""

from __future__ import annotations

from ..graph import Tensor
from .activation import activation_label, describe_activation, resolve_activation
from .module import Module, derive_seed, positive_ints


class Dense(Module):
    """``activation(x·W + b)`` on inputs of shape ``(batch, in_features)``.

    ``W`` has shape ``(in_features, out_features)`` and starts from ``init`` (Glorot
    uniform by default), ``b`` from ``bias_init`` (zeros); ``use_bias=False`` leaves ``b``
    out. ``activation`` is a name (``"tanh"``, ``"relu"``, ``"sigmoid"``, ...), a function
    such as ``sb.tanh``, a user function from ``sb.function``, or ``None``. Standalone, the
    parameters are named ``W`` and ``b``; inside a model they are numbered (``W1``, ``b1``);
    with ``name="out"`` they are ``W_out`` and ``b_out``.

    >>> import symbackprop as sb
    >>> layer = sb.nn.Dense(64, 10, activation="tanh", seed=0)
    >>> layer
    Dense(64 -> 10, activation=tanh)
    >>> layer(sb.input("x", (None, 64))).shape
    (None, 10)
    >>> layer(sb.input("x", (None, 32)))
    Traceback (most recent call last):
      ...
    symbackprop.errors.GraphError: Dense(64 -> 10, activation=tanh): input x (n, 32) has 32 features, expected 64
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation=None,
        use_bias: bool = True,
        init="glorot_uniform",
        bias_init="zeros",
        seed: int | None = None,
        name: str | None = None,
        dtype: str = "float32",
    ):
        self.in_features, self.out_features = positive_ints(self, in_features=in_features, out_features=out_features)
        self.name = name
        self.activation = resolve_activation(activation, f"Dense({in_features} -> {out_features})")
        self.W = self.add_param("W", (in_features, out_features), init=init, seed=derive_seed(seed, 0), dtype=dtype)
        self.b = (
            self.add_param("b", (out_features,), init=bias_init, seed=derive_seed(seed, 1), dtype=dtype)
            if use_bias
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, 2, "(batch, features)", self.in_features, self.W.dtype)
        z = x @ self.W
        if self.b is not None:
            z = z + self.b
        return z if self.activation is None else self.activation(z)

    def config(self) -> dict:
        config = super().config()
        config["activation"] = describe_activation(self.activation)
        return config

    def extra_repr(self) -> str:
        text = f"{self.in_features} -> {self.out_features}"
        if self.activation is not None:
            text += f", activation={activation_label(self.activation)}"
        return text + ("" if self.b is not None else ", use_bias=False")
