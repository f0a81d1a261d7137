"""Recurrent layers over ``(n, T, features)`` sequences, unrolled over the T time steps.

The graph holds one copy of the cell per time step, all reading the same parameters, so
``sb.grad`` gives backpropagation through time with nothing special. The state starts at
zero; the first step is written without the zero state's terms. Gates are stacked along the
columns of ``Wx`` (input to gates) and ``Wh`` (hidden state to gates), in PyTorch's order.
"""

from __future__ import annotations

from .. import functions as F
from ..graph import Tensor
from .activation import activation_label, describe_activation, resolve_activation
from .module import Module, derive_seed, positive_ints


class _Recurrent(Module):
    """Parameters, input checks and the loop over time; subclasses define ``gates`` and ``cell``."""

    gates: int
    hidden_bias = False  # a second bias, added to the recurrent product (GRU's reset gate scales it)

    def __init__(
        self,
        in_features: int,
        hidden: int,
        return_sequences: bool = False,
        init="glorot_uniform",
        recurrent_init="glorot_uniform",
        bias_init="zeros",
        seed: int | None = None,
        name: str | None = None,
        dtype: str = "float32",
    ):
        self.in_features, self.hidden = positive_ints(self, in_features=in_features, hidden=hidden)
        self.return_sequences = bool(return_sequences)
        self.name = name
        width = self.gates * hidden
        self.Wx = self.add_param("Wx", (in_features, width), init=init, seed=derive_seed(seed, 0), dtype=dtype)
        self.Wh = self.add_param("Wh", (hidden, width), init=recurrent_init, seed=derive_seed(seed, 1), dtype=dtype)
        self.b = self.add_param("b", (width,), init=bias_init, seed=derive_seed(seed, 2), dtype=dtype)
        if self.hidden_bias:
            self.bh = self.add_param("bh", (width,), init=bias_init, seed=derive_seed(seed, 3), dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, 3, "(batch, time, features)", self.in_features, self.Wx.dtype)
        state, outputs = None, []
        for step in range(x.shape[1]):
            state = self.cell(x[:, step, :] @ self.Wx + self.b, state)
            outputs.append(self.output(state))
        if not self.return_sequences:
            return outputs[-1]
        return F.concat([F.reshape(h, (None, 1, self.hidden)) for h in outputs], axis=1)

    def gate(self, stacked: Tensor, index: int) -> Tensor:
        """Entries ``index·hidden`` to ``(index+1)·hidden`` of the last axis of stacked gates."""
        return stacked[..., index * self.hidden : (index + 1) * self.hidden]

    def output(self, state) -> Tensor:
        return state

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.hidden}" + (", return_sequences=True" if self.return_sequences else "")


class RNN(_Recurrent):
    """The Elman recurrent layer: ``h_t = activation(x_t·Wx + h_{t−1}·Wh + b)``.

    Gives the last state ``(n, hidden)``, or every state ``(n, T, hidden)`` with
    ``return_sequences=True``. ``activation`` is ``"tanh"`` by default.

    >>> import symbackprop as sb
    >>> rnn = sb.nn.RNN(3, 5, seed=0)
    >>> rnn(sb.input("x", (None, 4, 3))).shape
    (None, 5)
    >>> sb.nn.RNN(3, 5, return_sequences=True)(sb.input("x", (None, 4, 3))).shape
    (None, 4, 5)
    """

    gates = 1

    def __init__(
        self,
        in_features: int,
        hidden: int,
        activation="tanh",
        return_sequences: bool = False,
        init="glorot_uniform",
        recurrent_init="glorot_uniform",
        bias_init="zeros",
        seed: int | None = None,
        name: str | None = None,
        dtype: str = "float32",
    ):
        self.activation = resolve_activation(activation, f"RNN({in_features} -> {hidden})")
        super().__init__(in_features, hidden, return_sequences, init, recurrent_init, bias_init, seed, name, dtype)

    def cell(self, inputs: Tensor, h):
        return self.activation(inputs if h is None else inputs + h @ self.Wh)

    def config(self) -> dict:
        config = super().config()
        config["activation"] = describe_activation(self.activation)
        return config

    def extra_repr(self) -> str:
        text = super().extra_repr()
        label = activation_label(self.activation)
        return text if label == "tanh" else f"{text}, activation={label}"


class LSTM(_Recurrent):
    """Long short-term memory with gates in PyTorch's order: input ``i``, forget ``f``, cell
    ``g``, output ``o``:

    ``[i f g o] = x_t·Wx + h_{t−1}·Wh + b``, ``c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g)``,
    ``h_t = σ(o) ⊙ tanh(c_t)``. ``b`` plays the part of PyTorch's two biases summed.

    >>> import symbackprop as sb
    >>> sb.nn.LSTM(3, 5)(sb.input("x", (None, 4, 3))).shape
    (None, 5)
    """

    gates = 4

    def cell(self, inputs: Tensor, state):
        stacked = inputs if state is None else inputs + state[0] @ self.Wh
        i, f, g, o = (self.gate(stacked, k) for k in range(4))
        c = F.sigmoid(i) * F.tanh(g)
        if state is not None:
            c = F.sigmoid(f) * state[1] + c
        return F.sigmoid(o) * F.tanh(c), c

    def output(self, state) -> Tensor:
        return state[0]


class GRU(_Recurrent):
    """Gated recurrent unit with gates in PyTorch's order: reset ``r``, update ``z``, new ``n``:

    ``r = σ(x_t·Wxr + bxr + h·Whr + bhr)``, ``z = σ(x_t·Wxz + bxz + h·Whz + bhz)``,
    ``n = tanh(x_t·Wxn + bxn + r ⊙ (h·Whn + bhn))``, ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``.
    The hidden bias ``bh`` is separate from the input bias ``b`` because the reset gate
    multiplies it.

    >>> import symbackprop as sb
    >>> sb.nn.GRU(3, 5)(sb.input("x", (None, 4, 3))).shape
    (None, 5)
    """

    gates = 3
    hidden_bias = True

    def cell(self, inputs: Tensor, h):
        # With no previous state, h·Wh is zero and only the hidden bias is left.
        recurrent = self.bh if h is None else h @ self.Wh + self.bh
        r = F.sigmoid(self.gate(inputs, 0) + self.gate(recurrent, 0))
        z = F.sigmoid(self.gate(inputs, 1) + self.gate(recurrent, 1))
        n = F.tanh(self.gate(inputs, 2) + r * self.gate(recurrent, 2))
        return (1 - z) * n if h is None else (1 - z) * n + z * h
