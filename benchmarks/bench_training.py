"""Training steps of symbackprop side by side with PyTorch, JAX and NumPy, in one table.

Run from the repository root with the project importable (``pip install -e .``)::

    python benchmarks/bench_training.py [--quick] [--only NAME[,NAME...]] [--json PATH]
    python benchmarks/bench_training.py --profile NAME[,NAME...]   # symbackprop's kernels alone

Peers that are not installed are skipped with a note (``pip install torch jax``).
Everything runs in float32 with two threads: the thread variables below are set before
NumPy, PyTorch or JAX load, ``torch.set_num_threads(2)`` is called, and NumPy's BLAS is
limited with threadpoolctl where it is installed. symbackprop uses what the library gives
it (the header says whether its generated code has a worker thread).

Each framework runs in its own worker process (two thread pools in one process on a small
machine slow each other down by orders of magnitude); the main process asks the workers
for one timing sample at a time, in turn, so that background load affects them alike, and
reports medians, pausing between two workers' samples while the last one's idle threads
stop spinning. A sample shorter than 0.1 s is preceded by an untimed run (a process that
has slept runs its first milliseconds slowly), and repeated until it lasts 20 ms. Every
worker builds the same data and initial weights from fixed seeds.

One training step is forward, backward and an SGD update (lr 0.01). A sample is an epoch
of minibatches for a training workload (the time shown is per step), else a batch of calls
lasting about 20 ms. ``ours`` trains through ``step.epoch`` (every minibatch in one native
call); ``ours step()`` is one Python call per minibatch. The peers: PyTorch eager
(``zero_grad``, ``backward``, ``optimizer.step``) at 2 threads and, as a variant, 1 thread;
JAX ``jit`` of one step called per minibatch (parameters donated) and ``jax.lax.scan`` of
the step over the epoch in one ``jit``; NumPy written out by hand. The best peer is the
fastest variant of any peer, or of the one peer a target names (swish: PyTorch; matmul:
NumPy).

The digits row trains end to end (``Trainer.fit`` on the embedded digits, 60 epochs, SGD with
momentum) through bench_digits.py, in that script's own workers, with the peers above and
scikit-learn; its times are the whole training's over its 2700 minibatches, its ✓ compares
the weights after one epoch, and its warm-up figures go to the compile columns (JAX 1st:
the first scanned epoch). bench_digits.py prints the full table and where the time goes.

Correctness first: before timing, every variant's losses over the first five steps (or a
workload's outputs) are compared with the reference's (PyTorch, else NumPy): largest
difference over largest reference value at most 1e-4. The ✓ column is symbackprop's.

FLOP convention: matrix products only, 6·batch·in·out per dense layer (forward, input
gradient, weight gradient) except the first, which needs no input gradient: 4·batch·in·out.
A square matmul is 2·n³. Elementwise work is not counted.

Compile times come from fresh processes: ``cold`` with SYMBACKPROP_CACHE_DIR set to an
empty directory, ``warm`` in a second process reading that cache; both time the
``sb.compile_step`` (or ``sb.compile``) call after the graph is built and the back end is
imported. The compile row also times a new model: the step compiled where another process
has built the kernel library into the cache and nothing else, as on a machine where
symbackprop has compiled another model before. JAX's figure is the first call of its
jitted step in a fresh process, after its backend has started. Those start-up costs are
reported apart. The compile row takes the median of three such measurements, the other
rows one.
"""

from __future__ import annotations

from common import (
    Worker,
    available,
    blas_threads,
    format_time,
    load_average,
    machine,
    our_threads,
    pin_threads,
    print_table,
    serve,
)

THREADS = 2
pin_threads(THREADS)  # before NumPy, PyTorch or JAX load

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import symbackprop as sb  # noqa: E402

LR = 0.01
CHECK_STEPS = 5
TOLERANCE = 1e-4
SAMPLE_SECONDS = 0.02  # one sample of a per-call workload
# Between samples: lets the last worker's idle threads go to sleep. OpenBLAS's spin for about
# 2**28 cycles (0.1 s) after each call, and with 5 ms here they took the second core from
# whichever peer came next: ours with its worker 1.16 against 0.94 ms per mnist step, NumPy
# 1.73 against 1.29 ms (alternate runs, `--only mnist --peers ours,numpy`).
PAUSE_SECONDS = 0.12
WARM_RUN_BELOW = 0.1  # samples shorter than this (seconds) are preceded by an untimed run
# A sample repeats its run (an epoch, or a batch of calls) until it lasts this long: the first
# milliseconds after a pause run slowly, and an epoch of tiny took about 1 ms (ours 2.4-3.2 µs
# per step in one-epoch samples against 1.7 µs back to back).
MIN_SAMPLE_SECONDS = 0.02
COMPILE_REPEATS = (3, 1)  # fresh-process compiles for the compile row's median: full, --quick


# -- workloads -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MLP:
    """Dense layers ``sizes[0] → … → sizes[-1]``, ``activation`` between them, none after the last."""

    sizes: tuple[int, ...]
    activation: str  # "tanh" | "relu"
    loss: str  # "mse" | "ce" (softmax cross-entropy over int64 labels)
    batch: int
    steps: tuple[int, int]  # minibatches per timed epoch: full, --quick

    @property
    def layers(self) -> list[tuple[int, int]]:
        return list(zip(self.sizes, self.sizes[1:]))

    @property
    def flops(self) -> int:
        n_in, n_out = self.layers[0]
        return sum(6 * self.batch * i * o for i, o in self.layers) - 2 * self.batch * n_in * n_out


@dataclass(frozen=True)
class Swish:
    size: int
    flops = None


@dataclass(frozen=True)
class Matmul:
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.n**3


@dataclass(frozen=True)
class CompileOnly:
    workload: str  # the workload whose training step is compiled
    flops = None


@dataclass(frozen=True)
class Digits:
    """Whole trainings on the embedded digits, timed by bench_digits.py; times are per step."""

    mlp: MLP

    @property
    def flops(self) -> int:
        return self.mlp.flops


# The network bench_digits.py trains: 45 minibatches per epoch of the 1438 training digits.
DIGITS = MLP((64, 64, 10), "tanh", "ce", 32, (45, 45))


@dataclass(frozen=True)
class Target:
    """``time``: ours/best ≤ limit; ``rate``: ours/best in GFLOP/s ≥ limit; ``compile``: cold
    compile / JAX's first call ≤ limit and the warm compile ≤ ``warm`` seconds. ``best`` is
    the fastest variant of the peer named by ``against``, else of every peer."""

    kind: str
    limit: float
    against: str = ""  # compare with this peer's variants only (all peers if empty)
    warm: float = 0.0

    def text(self) -> str:
        of = f" of {self.against}" if self.against else ""
        if self.kind == "time":
            return f"≤ {self.limit:.2f}{of}"
        if self.kind == "rate":
            return f"≥ {self.limit:.2f}{of} (rate)"
        return f"≤ {self.limit:.2f}, warm ≤ {self.warm * 1e3:.0f} ms"


@dataclass(frozen=True)
class Workload:
    name: str
    spec: MLP | Swish | Matmul | Digits | CompileOnly
    target: Target
    samples: tuple[int, int] = (15, 5)  # full, --quick

    @property
    def group(self) -> str:
        return self.name.split()[0]


WORKLOADS = [
    Workload("tiny", MLP((2, 16, 16, 1), "tanh", "mse", 32, (512, 128)), Target("time", 0.20)),
    Workload("deep", MLP((64,) * 21 + (10,), "tanh", "ce", 64, (48, 16)), Target("time", 0.50)),
    Workload("mnist", MLP((784, 256, 128, 10), "relu", "ce", 128, (32, 8)), Target("time", 0.80)),
    Workload("wide", MLP((1024, 2048, 2048, 10), "relu", "ce", 256, (4, 2)), Target("time", 1.00), (7, 3)),
    Workload("swish", Swish(10**6), Target("time", 0.50, against="torch")),
    *(
        Workload(f"matmul {n}", Matmul(n), Target("rate", 0.90, against="numpy"), (11, 5))
        for n in (64, 128, 256, 512, 768, 1024)
    ),
    Workload("digits", Digits(DIGITS), Target("time", 0.20), (5, 1)),
    Workload("compile", CompileOnly("mnist"), Target("compile", 1.00, warm=0.020)),
]
BY_NAME = {w.name: w for w in WORKLOADS}
PEERS = ["ours", "torch", "jax", "numpy"]
COLUMNS = ["ours", "torch", "jax jit", "jax scan", "numpy"]  # variants with a column of their own


def installed(peer: str) -> bool:
    return peer in ("ours", "numpy") or available(peer)


# -- the same problem for every peer ---------------------------------------------------------------
def initial_weights(spec: MLP, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform ``W`` (in × out) and small uniform biases, float32, one pair per layer."""
    rng = np.random.default_rng(seed)
    weights = []
    for n_in, n_out in spec.layers:
        limit = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32)
        weights.append((w, rng.uniform(-0.1, 0.1, n_out).astype(np.float32)))
    return weights


def training_data(spec: MLP, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Normal inputs; int64 labels for cross-entropy, a smooth function of the inputs for MSE."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, spec.sizes[0])).astype(np.float32)
    if spec.loss == "ce":
        return x, rng.integers(0, spec.sizes[-1], count).astype(np.int64)
    projection = rng.normal(size=(spec.sizes[0], spec.sizes[-1])).astype(np.float32)
    return x, np.tanh(x @ projection).astype(np.float32)


@dataclass
class Problem:
    """Initial weights and one epoch of data, cut into minibatches."""

    spec: MLP
    steps: int
    weights: list
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def make(cls, spec: MLP, quick: bool) -> Problem:
        steps = spec.steps[quick]
        return cls(spec, steps, initial_weights(spec), *training_data(spec, steps * spec.batch))

    @property
    def batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        b = self.spec.batch
        return [(self.x[i : i + b], self.y[i : i + b]) for i in range(0, len(self.x), b)]

    @property
    def check_batches(self):
        return self.batches[:CHECK_STEPS]


def swish_input(size: int) -> np.ndarray:
    return np.random.default_rng(2).normal(size=size).astype(np.float32)


def matmul_operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)


@dataclass
class Variant:
    """One way a peer runs a workload: outputs to check, and one timing sample of ``count`` steps."""

    check: list[np.ndarray] | None
    run: Callable[[], object] | None = None
    count: int = 1
    seconds: float = 0.0  # of the last run


def calibrated(call: Callable[[], object], check=None) -> Variant:
    """A variant repeating ``call`` for about SAMPLE_SECONDS per sample."""
    call()
    start = time.perf_counter()
    call()
    count = max(1, int(SAMPLE_SECONDS / max(time.perf_counter() - start, 1e-7)))

    def run():
        for _ in range(count):
            call()

    return Variant(check, run, count)


# -- symbackprop -----------------------------------------------------------------------------------
def sb_mlp_graph(spec: MLP, weights):
    """``([x, y], loss, params)`` of the network, its params holding copies of ``weights``."""
    x = sb.input("x", (None, spec.sizes[0]))
    y = sb.input("y", (None,), dtype="int64") if spec.loss == "ce" else sb.input("y", (None, spec.sizes[-1]))
    activation = {"tanh": sb.tanh, "relu": sb.relu}[spec.activation]
    params, h = [], x
    for i, (w, b) in enumerate(weights):
        weight = sb.param(f"W{i + 1}", w.shape, init=w.copy())
        bias = sb.param(f"b{i + 1}", b.shape, init=b.copy())
        params += [weight, bias]
        h = h @ weight + bias
        if i < len(weights) - 1:
            h = activation(h)
    loss = sb.softmax_cross_entropy(h, y) if spec.loss == "ce" else sb.mse(h, y)
    return [x, y], loss, params


def sb_swish_graph():
    x = sb.input("x", (None,))
    total = (x * sb.sigmoid(x)).sum()
    return [x], [total, *sb.grad(total, [x])]


def sb_matmul_graph(w: np.ndarray):
    x = sb.input("x", (None, w.shape[0]))
    return [x], x @ sb.param("w", w.shape, init=w)


def ours_mlp(workload: Workload, quick: bool) -> dict[str, Variant]:
    problem = Problem.make(workload.spec, quick)
    inputs, loss, params = sb_mlp_graph(problem.spec, problem.weights)
    step = sb.compile_step(loss, inputs, params, sb.optim.SGD(lr=LR))
    batch = problem.spec.batch

    def reset():
        for p, value in zip(params, (a for pair in problem.weights for a in pair)):
            p.value = value.copy()

    def epoch(x, y):
        return step.epoch(x, y, batch_size=batch, shuffle=False)

    def calls(batches):
        return [step(x, y) for x, y in batches]

    check = problem.check_batches
    reset()
    step_losses = calls(check)
    reset()
    epoch_losses = [epoch(x, y) for x, y in check]  # one native epoch per minibatch: the loss of each step
    reset()
    epoch_mean = epoch(*(np.concatenate(parts) for parts in zip(*check)))
    batches = problem.batches
    return {
        "ours": Variant([np.array(epoch_losses)], lambda: epoch(problem.x, problem.y), problem.steps),
        "ours step()": Variant([np.array(step_losses)], lambda: calls(batches), problem.steps),
        f"ours epoch of {CHECK_STEPS} (mean)": Variant([np.array([epoch_mean])]),
    }


def ours_swish(workload: Workload, quick: bool) -> dict[str, Variant]:
    x = swish_input(workload.spec.size)
    inputs, outputs = sb_swish_graph()
    compiled = sb.compile(outputs, inputs=inputs)
    return {"ours": calibrated(lambda: compiled(x), check=list(compiled(x)))}


def ours_matmul(workload: Workload, quick: bool) -> dict[str, Variant]:
    x, w = matmul_operands(workload.spec.n)
    inputs, product = sb_matmul_graph(w)
    compiled = sb.compile(product, inputs=inputs)
    return {"ours": calibrated(lambda: compiled(x), check=[compiled(x)])}


# -- PyTorch ---------------------------------------------------------------------------------------
def torch_setup():
    import torch

    torch.set_num_threads(THREADS)
    return torch


@contextlib.contextmanager
def torch_threads(count: int):
    torch = torch_setup()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(THREADS)


class TorchMLP:
    """``nn.Linear`` layers from ``weights`` (in × out, transposed into PyTorch's out × in)
    trained by ``torch.optim.SGD``, with ``momentum`` in PyTorch's convention."""

    def __init__(self, spec: MLP, weights, lr: float = LR, momentum: float = 0.0):
        torch = self.torch = torch_setup()
        self.weights = weights
        layers = []
        for i, (w, _) in enumerate(weights):
            layers.append(torch.nn.Linear(*w.shape))
            if i < len(weights) - 1:
                layers.append(torch.nn.Tanh() if spec.activation == "tanh" else torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.linears = [m for m in self.model if isinstance(m, torch.nn.Linear)]
        self.loss_fn = torch.nn.functional.cross_entropy if spec.loss == "ce" else torch.nn.functional.mse_loss
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)

    def reset(self) -> None:
        """The initial weights back, and the optimizer's momenta forgotten."""
        self.optimizer.state.clear()
        with self.torch.no_grad():
            for linear, (w, b) in zip(self.linears, self.weights):
                linear.weight.copy_(self.torch.from_numpy(w.T.copy()))
                linear.bias.copy_(self.torch.from_numpy(b))

    def tensors(self, batches):
        return [(self.torch.from_numpy(x), self.torch.from_numpy(y)) for x, y in batches]

    def step(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss

    def losses(self, batches) -> np.ndarray:
        self.reset()
        return np.array([self.step(x, y).item() for x, y in self.tensors(batches)])

    def epoch(self, batches) -> None:
        for x, y in batches:
            self.step(x, y)


def torch_mlp(workload: Workload, quick: bool) -> dict[str, Variant]:
    problem = Problem.make(workload.spec, quick)
    model = TorchMLP(problem.spec, problem.weights)
    losses = model.losses(problem.check_batches)
    batches = model.tensors(problem.batches)

    def one_thread():
        with torch_threads(1):
            model.epoch(batches)

    return {
        "torch": Variant([losses], lambda: model.epoch(batches), problem.steps),
        "torch 1 thread": Variant(None, one_thread, problem.steps),
    }


def torch_swish(workload: Workload, quick: bool) -> dict[str, Variant]:
    torch = torch_setup()
    x = torch.from_numpy(swish_input(workload.spec.size)).requires_grad_()

    def autograd(activation):
        def call():
            total = activation(x).sum()
            return total, torch.autograd.grad(total, x)[0]

        return call

    variants = {}
    for name, activation in (("torch", lambda t: t * torch.sigmoid(t)), ("torch F.silu", torch.nn.functional.silu)):
        call = autograd(activation)
        variants[name] = calibrated(call, check=[v.detach().numpy() for v in call()])
    return variants


# -- JAX -------------------------------------------------------------------------------------------
def jax_loss_function(spec: MLP):
    """``loss(params, x, y)`` of the network, ``params`` a list of ``(W, b)`` pairs."""
    import jax
    import jax.numpy as jnp

    activation = {"tanh": jnp.tanh, "relu": jax.nn.relu}[spec.activation]

    def loss_fn(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = activation(h)
        if spec.loss == "ce":
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), y[:, None], axis=1))
        return jnp.mean((h - y) ** 2)

    return loss_fn


def jax_mlp_functions(spec: MLP):
    """``(step, epoch)``: one SGD step and the step scanned over an epoch, both jitted."""
    import jax

    loss_fn = jax_loss_function(spec)

    def step(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return jax.tree.map(lambda p, g: p - LR * g, params, grads), loss

    def epoch(params, xs, ys):
        return jax.lax.scan(lambda p, batch: step(p, *batch), params, (xs, ys))

    return jax.jit(step, donate_argnums=0), jax.jit(epoch, donate_argnums=0)


def jax_params(weights):
    import jax

    # Copies: donated buffers are reused for results and must not alias the weights.
    return [(jax.device_put(w.copy()), jax.device_put(b.copy())) for w, b in weights]


def jax_mlp(workload: Workload, quick: bool) -> dict[str, Variant]:
    import jax

    problem = Problem.make(workload.spec, quick)
    jit_step, jit_epoch = jax_mlp_functions(problem.spec)
    state = {"params": jax_params(problem.weights)}

    def steps(batches):
        params = state["params"]
        losses = []
        for x, y in batches:
            params, loss = jit_step(params, x, y)
            losses.append(loss)
        state["params"] = jax.block_until_ready(params)
        return losses

    def scan(xs, ys):
        state["params"], losses = jit_epoch(state["params"], xs, ys)
        return jax.block_until_ready(losses)

    check = problem.check_batches
    step_losses = np.array([float(v) for v in steps(check)])
    state["params"] = jax_params(problem.weights)
    scan_losses = np.asarray(scan(*(np.stack(parts) for parts in zip(*check))))
    batches = [tuple(map(jax.device_put, batch)) for batch in problem.batches]
    xs, ys = (jax.device_put(np.stack(parts)) for parts in zip(*problem.batches))
    return {
        "jax jit": Variant([step_losses], lambda: steps(batches), problem.steps),
        "jax scan": Variant([scan_losses], lambda: scan(xs, ys), problem.steps),
    }


def jax_swish_function():
    import jax

    return jax.jit(jax.value_and_grad(lambda t: (t * jax.nn.sigmoid(t)).sum()))


def jax_swish(workload: Workload, quick: bool) -> dict[str, Variant]:
    import jax

    value_and_grad = jax_swish_function()
    x = jax.device_put(swish_input(workload.spec.size))

    def call():
        return jax.block_until_ready(value_and_grad(x))

    return {"jax jit": calibrated(call, check=[np.asarray(v) for v in call()])}


# -- NumPy by hand ---------------------------------------------------------------------------------
class NumpyMLP:
    """Forward and backward passes written out with NumPy, SGD with ``momentum`` in PyTorch's
    convention (``v ← μ·v + g``, ``w ← w − η·v``; plain SGD when it is 0)."""

    def __init__(self, spec: MLP, weights, lr: float = LR, momentum: float = 0.0):
        self.spec, self.weights = spec, weights
        self.lr, self.momentum = np.float32(lr), np.float32(momentum)
        self.reset()

    def reset(self) -> None:
        self.params = [(w.copy(), b.copy()) for w, b in self.weights]
        self.velocities = [(np.zeros_like(w), np.zeros_like(b)) for w, b in self.weights] if self.momentum else []

    def forward(self, x) -> list[np.ndarray]:
        """The input, every hidden layer's activations, and the last layer's outputs."""
        hs = [x]
        for i, (w, b) in enumerate(self.params):
            z = hs[-1] @ w + b
            hs.append(z if i == len(self.params) - 1 else self.activation(z))
        return hs

    def step(self, x, y) -> float:
        hs = self.forward(x)
        loss, delta = self.loss_and_delta(hs.pop(), y)
        for i in reversed(range(len(self.params))):
            w, b = self.params[i]
            h = hs[i]
            grad_w, grad_b = h.T @ delta, delta.sum(axis=0)
            if i:
                delta = delta @ w.T
                delta *= 1 - h * h if self.spec.activation == "tanh" else h > 0
            if self.momentum:
                v_w, v_b = self.velocities[i]
                v_w *= self.momentum
                v_w += grad_w
                v_b *= self.momentum
                v_b += grad_b
                grad_w, grad_b = v_w, v_b
            w -= self.lr * grad_w
            b -= self.lr * grad_b
        return loss

    def activation(self, z):
        return np.tanh(z) if self.spec.activation == "tanh" else np.maximum(z, 0)

    def loss_and_delta(self, z, y) -> tuple[float, np.ndarray]:
        if self.spec.loss == "mse":
            diff = z - y
            return float(np.mean(diff * diff)), diff * np.float32(2 / diff.size)
        shifted = z - z.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, y]))
        probabilities = exp / total
        probabilities[rows, y] -= 1
        return loss, probabilities * np.float32(1 / len(y))

    def epoch(self, batches) -> list[float]:
        return [self.step(x, y) for x, y in batches]


def numpy_mlp(workload: Workload, quick: bool) -> dict[str, Variant]:
    problem = Problem.make(workload.spec, quick)
    model = NumpyMLP(problem.spec, problem.weights)
    losses = np.array(model.epoch(problem.check_batches))
    batches = problem.batches
    return {"numpy": Variant([losses], lambda: model.epoch(batches), problem.steps)}


def numpy_swish(workload: Workload, quick: bool) -> dict[str, Variant]:
    x = swish_input(workload.spec.size)

    def call():
        s = 1 / (1 + np.exp(-x))
        return (x * s).sum(), s * (1 + x * (1 - s))

    return {"numpy": calibrated(call, check=list(call()))}


def numpy_matmul(workload: Workload, quick: bool) -> dict[str, Variant]:
    x, w = matmul_operands(workload.spec.n)
    numpy = calibrated(lambda: x @ w, check=[x @ w])
    with blas_threads(1):
        one = calibrated(lambda: x @ w)

    def one_thread():
        with blas_threads(1):
            one.run()

    return {"numpy": numpy, "numpy 1 thread": Variant(None, one_thread, one.count)}


# peer → workload kind → setup returning the peer's variants
SETUPS = {
    "ours": {MLP: ours_mlp, Swish: ours_swish, Matmul: ours_matmul},
    "torch": {MLP: torch_mlp, Swish: torch_swish},
    "jax": {MLP: jax_mlp, Swish: jax_swish},
    "numpy": {MLP: numpy_mlp, Swish: numpy_swish, Matmul: numpy_matmul},
}


# -- worker processes: one per peer ----------------------------------------------------------------
def worker(peer: str, quick: bool) -> None:
    """Serve ``setup`` and ``sample`` requests, one JSON line each, on stdin and stdout."""
    with blas_threads(THREADS):
        variants: dict[str, Variant] = {}

        def handle(request: dict) -> dict:
            nonlocal variants
            workload = BY_NAME[request["workload"]]
            if request["command"] == "sample":
                return {"seconds": sample(variants)}
            variants = SETUPS[peer][type(workload.spec)](workload, quick)
            for variant in variants.values():
                if variant.run:  # warm-up: JIT compilation, allocator, caches
                    start = time.perf_counter()
                    variant.run()
                    variant.seconds = time.perf_counter() - start
            checks = {f"{name}|{i}": a for name, v in variants.items() for i, a in enumerate(v.check or [])}
            np.savez(request["check_path"], **checks)
            return {"variants": list(variants)}

        serve(handle)


def sample(variants: dict[str, Variant]) -> dict[str, float]:
    """Seconds per step or call of each timed variant, garbage collection off.

    A worker sleeps while the others take their samples, and the first milliseconds after
    that run slower (cold caches, an idle virtual CPU): a short sample is preceded by an
    untimed run."""
    seconds = {}
    gc.collect()
    gc.disable()
    try:
        for name, variant in variants.items():
            if variant.run:
                if variant.seconds < WARM_RUN_BELOW:
                    variant.run()
                runs = max(1, math.ceil(MIN_SAMPLE_SECONDS / variant.seconds)) if variant.seconds else 1
                start = time.perf_counter()
                for _ in range(runs):
                    variant.run()
                variant.seconds = (time.perf_counter() - start) / runs
                seconds[name] = variant.seconds / variant.count
    finally:
        gc.enable()
    return seconds


class TrainingWorker(Worker):
    """A peer's worker process, asked to set up a workload and then for timing samples."""

    def __init__(self, peer: str, quick: bool, directory: Path):
        super().__init__(__file__, peer, directory, ["--quick"] if quick else [])
        self.peer, self.directory = peer, directory

    def setup(self, workload: Workload) -> dict[str, np.ndarray]:
        path = self.directory / f"{self.peer}-check.npz"
        self.request(command="setup", workload=workload.name, check_path=str(path))
        with np.load(path) as checks:
            grouped = {}
            for key in checks.files:
                name, index = key.rsplit("|", 1)
                grouped.setdefault(name, {})[int(index)] = checks[key]
        return {name: [parts[i] for i in sorted(parts)] for name, parts in grouped.items()}

    def sample(self, workload: Workload) -> dict[str, float]:
        return self.request(command="sample", workload=workload.name)["seconds"]


# -- compile times, in fresh processes ------------------------------------------------------------
def compile_child(name: str, peer: str) -> dict[str, float]:
    """Seconds to compile ``name``'s step (ours) or to make JAX's first jitted call, and
    seconds to start the back end before that (not counted: a once-per-process cost)."""
    spec = BY_NAME[name].spec
    if peer == "jax":
        return jax_first_call(spec)
    if peer == "library":  # the kernel library alone, as a machine has it after its first model
        from codegen import library

        start = time.perf_counter()
        library.load()
        return {"seconds": time.perf_counter() - start, "start": 0.0}
    start = time.perf_counter()
    for module in ("codegen.compile", "codegen.step"):  # what the first compile imports
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    started = time.perf_counter() - start
    if isinstance(spec, MLP):
        inputs, loss, params = sb_mlp_graph(spec, initial_weights(spec))
        start = time.perf_counter()
        sb.compile_step(loss, inputs, params, sb.optim.SGD(lr=LR))
    else:
        inputs, outputs = sb_swish_graph() if isinstance(spec, Swish) else sb_matmul_graph(matmul_operands(spec.n)[1])
        start = time.perf_counter()
        sb.compile(outputs, inputs=inputs)
    return {"seconds": time.perf_counter() - start, "start": started}


def jax_first_call(spec) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    start = time.perf_counter()
    jnp.zeros(()).block_until_ready()  # start the backend outside the timing
    started = time.perf_counter() - start
    if isinstance(spec, MLP):
        step, _ = jax_mlp_functions(spec)
        params = jax_params(initial_weights(spec))
        x, y = training_data(spec, spec.batch)
        start = time.perf_counter()
        jax.block_until_ready(step(params, x, y))
    else:
        value_and_grad = jax_swish_function()
        x = jax.device_put(swish_input(spec.size))
        start = time.perf_counter()
        jax.block_until_ready(value_and_grad(x))
    return {"seconds": time.perf_counter() - start, "start": started}


def run_child(name: str, peer: str, cache_dir: str) -> dict[str, float]:
    environment = dict(os.environ, SYMBACKPROP_CACHE_DIR=cache_dir)
    command = [sys.executable, __file__, "--compile-child", name, "--peer", peer]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if completed.returncode:
        raise RuntimeError(f"compiling {name} ({peer}) failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compile_times(workload: Workload, repeats: int = 1, new_model: bool = False) -> dict[str, float]:
    """Cold and warm compiles and JAX's first call, each in a fresh process (medians of
    ``repeats``), and the back ends' start-up (codegen and llvmlite imports; JAX's backend).
    With ``new_model``, also the compile of a model new to a cache that holds the kernel
    library only, as on a machine where symbackprop has compiled another model before."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="symbackprop-cache-") as cache_dir:
            cold = run_child(workload.name, "ours", cache_dir)
            warm = run_child(workload.name, "ours", cache_dir)
        times = {"cold": cold["seconds"], "warm": warm["seconds"], "ours start": warm["start"]}
        if new_model:
            with tempfile.TemporaryDirectory(prefix="symbackprop-cache-") as cache_dir:
                run_child(workload.name, "library", cache_dir)
                times["new model"] = run_child(workload.name, "ours", cache_dir)["seconds"]
        if available("jax") and not isinstance(workload.spec, Matmul):
            first = run_child(workload.name, "jax", tempfile.gettempdir())
            times |= {"jax first call": first["seconds"], "jax start": first["start"]}
        runs.append(times)
    return {key: statistics.median(t[key] for t in runs) for key in runs[0]}


# -- results -------------------------------------------------------------------------------------
@dataclass
class Result:
    workload: Workload
    seconds: dict[str, float] = field(default_factory=dict)  # per step or call, by variant
    check: bool | None = None
    check_detail: str = ""
    compile: dict[str, float] = field(default_factory=dict)  # cold, warm, jax first call
    notes: list[str] = field(default_factory=list)

    @property
    def best_peer(self) -> str | None:
        against = self.workload.target.against
        peers = {k: v for k, v in self.seconds.items() if not k.startswith("ours") and k.startswith(against)}
        return min(peers, key=peers.get) if peers else None

    @property
    def ratio(self) -> float | None:
        target, best = self.workload.target, self.best_peer
        if target.kind == "compile":
            cold, first = self.compile.get("cold"), self.compile.get("jax first call")
            return cold / first if cold and first else None
        if best is None or "ours" not in self.seconds:
            return None
        ratio = self.seconds["ours"] / self.seconds[best]
        return 1 / ratio if target.kind == "rate" else ratio

    @property
    def met(self) -> bool | None:
        target, ratio = self.workload.target, self.ratio
        if ratio is None:
            return None
        if target.kind == "rate":
            return ratio >= target.limit
        return ratio <= target.limit and (target.kind != "compile" or self.compile["warm"] <= target.warm)

    @property
    def gflops(self) -> float | None:
        flops = self.workload.spec.flops
        return flops / self.seconds["ours"] / 1e9 if flops and "ours" in self.seconds else None

    def as_json(self) -> dict:
        return {
            "workload": self.workload.name,
            "seconds": self.seconds,
            "best_peer": self.best_peer,
            "ratio": self.ratio,
            "target": self.workload.target.text(),
            "target_met": self.met,
            "gflops": self.gflops,
            "flops_per_step": self.workload.spec.flops,
            "check": self.check,
            "check_detail": self.check_detail,
            "compile_seconds": self.compile,
            "notes": self.notes,
        }


def difference(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """Largest absolute difference over the largest reference value, over every output.

    A single value checked against several (the mean loss of an epoch) is compared with
    their mean."""
    worst = 0.0
    for g, e in zip(got, expected):
        g, e = np.asarray(g, np.float64), np.asarray(e, np.float64)
        if g.size == 1 and e.size > 1:
            e = e.mean()
        if not np.all(np.isfinite(g)):
            return np.inf
        worst = max(worst, float(np.max(np.abs(g - e)) / max(float(np.max(np.abs(e))), 1e-30)))
    return worst


def check(result: Result, checks: dict[str, list[np.ndarray]]) -> None:
    """Compare every variant's outputs with the reference's; ``ours*`` variants set the ✓."""
    reference = next((name for name in ("torch", "numpy") if name in checks), None)
    if reference is None:
        result.check_detail = "not checked: no reference peer (torch or numpy) ran"
        return
    errors = {name: difference(outputs, checks[reference]) for name, outputs in checks.items() if name != reference}
    ours = [e for name, e in errors.items() if name.startswith("ours")]
    result.check = bool(ours) and max(ours) <= TOLERANCE
    result.check_detail = f"difference from {reference}: " + ", ".join(f"{n} {e:.1e}" for n, e in errors.items())
    for name, error in errors.items():
        if not name.startswith("ours") and error > TOLERANCE:
            result.notes.append(f"WARNING: {name} differs from {reference} by {error:.1e}")


def measure(workload: Workload, workers: list[TrainingWorker], quick: bool) -> Result:
    result = Result(workload)
    checks, times = {}, {}
    active = [w for w in workers if type(workload.spec) in SETUPS[w.peer]]
    for w in active:
        checks.update(w.setup(workload))
    for _ in range(workload.samples[quick]):
        for w in active:
            time.sleep(PAUSE_SECONDS)
            for name, seconds in w.sample(workload).items():
                times.setdefault(name, []).append(seconds)
    result.seconds = {name: statistics.median(values) for name, values in times.items()}
    check(result, checks)
    for name, seconds in result.seconds.items():
        if name not in COLUMNS:
            result.notes.append(f"{name}: {format_time(seconds)}")
    return result


# -- report --------------------------------------------------------------------------------------
HEADER = ["workload", *COLUMNS, "best peer", "ours/best", "target", "GFLOP/s", "✓", "cold", "warm", "JAX 1st"]


def table_row(r: Result) -> list[str]:
    ratio, met = r.ratio, r.met
    seconds = dict(r.seconds)
    if r.workload.target.kind == "compile":
        seconds = {"ours": r.compile.get("cold"), "jax jit": r.compile.get("jax first call")}
    return [
        r.workload.name,
        *(format_time(seconds.get(c)) for c in COLUMNS),
        r.best_peer or ("jax 1st call" if "jax first call" in r.compile else "·"),
        "·" if ratio is None else f"{ratio:.2f}",
        r.workload.target.text() + ("" if met is None else " met" if met else " MISS"),
        "·" if r.gflops is None else f"{r.gflops:.1f}",
        {True: "✓", False: "✗", None: "·"}[r.check],
        format_time(r.compile.get("cold")),
        format_time(r.compile.get("warm")),
        format_time(r.compile.get("jax first call")),
    ]


def description() -> dict[str, str]:
    return machine(f"{THREADS} for the peers; symbackprop: {our_threads()}")


# -- main ----------------------------------------------------------------------------------------
def selected(only: str | None) -> list[Workload]:
    if not only:
        return WORKLOADS
    names = [n.strip() for n in only.split(",")]
    unknown = [n for n in names if not any(n in (w.name, w.group) for w in WORKLOADS)]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {[w.name for w in WORKLOADS]}")
    return [w for w in WORKLOADS if w.name in names or w.group in names]


def run(workloads: list[Workload], peers: list[str], quick: bool) -> list[Result]:
    results, compiled = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as directory:
        workers = [TrainingWorker(peer, quick, Path(directory)) for peer in peers]
        try:
            for workload in workloads:
                if isinstance(workload.spec, (CompileOnly, Digits)):
                    continue
                print(f"timing {workload.name} ...", file=sys.stderr, flush=True)
                results.append(measure(workload, workers, quick))
        finally:
            for w in workers:
                w.close()
    # Whole trainings next, in bench_digits.py's own workers, then compile times, with the workers gone.
    for workload in workloads:
        if isinstance(workload.spec, Digits):
            print(f"timing {workload.name} ...", file=sys.stderr, flush=True)
            results.append(digits_result(workload, peers, quick))
    # --quick measures the compile row's compile times only.
    for workload in workloads:
        if isinstance(workload.spec, Digits):
            continue
        compile_row = isinstance(workload.spec, CompileOnly)
        name = workload.spec.workload if compile_row else workload.name
        if not quick or compile_row or any(w.spec == CompileOnly(name) for w in workloads):
            print(f"compiling {name} ...", file=sys.stderr, flush=True)
            compile_workload = any(w.spec == CompileOnly(name) for w in WORKLOADS)
            repeats = COMPILE_REPEATS[quick] if compile_workload else 1
            compiled[name] = compiled.get(name) or compile_times(BY_NAME[name], repeats, new_model=compile_workload)
        if compile_row:
            results.append(Result(workload, compile=compiled[name], notes=start_notes(compiled[name])))
    for r in results:
        r.compile = r.compile or compiled.get(r.workload.name, {})
    return results


def digits_result(workload: Workload, peers: list[str], quick: bool) -> Result:
    """The digits row: bench_digits.py's whole trainings with these peers and scikit-learn,
    per step (the training time over its minibatches), ``ours`` being ``Trainer.fit``."""
    import bench_digits

    chosen = [p for p in peers if p != "ours"] + (["sklearn"] if available("sklearn") else [])
    report = bench_digits.benchmark(chosen, repeats=workload.samples[quick], profiled=False)
    rows = report.rows
    result = Result(workload, {DIGITS_COLUMNS.get(n, n): r.median / report.steps for n, r in rows.items()})
    result.compile = {"cold": rows["ours fit"].compile, "warm": report.warm_compile}
    if "jax scan" in rows:
        result.compile["jax first call"] = rows["jax scan"].warm_up
    checked = [r for r in rows.values() if r.difference is not None]
    if any(not r.is_peer for r in checked):
        result.check = all(r.passed for r in checked if not r.is_peer)
        result.check_detail = "weights after one epoch, " + ", ".join(f"{r.name} {r.difference:.1e}" for r in checked)
    result.notes += [f"{n}: {format_time(s)}" for n, s in result.seconds.items() if n not in COLUMNS]
    result.notes.append(
        f"{report.epochs} epochs of {report.steps // report.epochs} steps, test accuracy: "
        + ", ".join(f"{n} {statistics.median(r.accuracy):.1%}" for n, r in rows.items())
    )
    result.notes.append("JAX 1st = the first epoch of jax scan, compile included; details: bench_digits.py")
    return result


# bench_digits.py's contenders shown in a column of the table
DIGITS_COLUMNS = {"ours fit": "ours"}


def start_notes(times: dict[str, float]) -> list[str]:
    notes = ["ours = cold compile of the mnist step; jax jit = JAX's first call of its jitted step"]
    if "new model" in times:
        new_model = "a new model where the kernel library is cached (another model compiled before): "
        new_model += format_time(times["new model"])
        if "jax first call" in times:
            new_model += f", {times['new model'] / times['jax first call']:.2f} of JAX's first call"
        notes.append(new_model)
    starts = [
        f"{label} {format_time(times[key])}"
        for key, label in (("ours start", "symbackprop's import of its back end"), ("jax start", "JAX's backend"))
        if key in times
    ]
    return notes + ([f"start-up in a fresh process, not counted: {', '.join(starts)}"] if starts else [])


def profile_steps(workloads: list[Workload], quick: bool, top: int = 12) -> None:
    """For each training workload, symbackprop's step compiled with ``profile=True``: time per
    step of native epochs over about half a second, and the slowest kernels (see
    docs/compiling.md, "Where the time goes")."""
    for workload in workloads:
        spec = workload.spec.mlp if isinstance(workload.spec, Digits) else workload.spec
        if not isinstance(spec, MLP):
            print(f"\n{workload.name}: not a training step, skipped")
            continue
        problem = Problem.make(spec, quick)
        inputs, loss, params = sb_mlp_graph(problem.spec, problem.weights)
        step = sb.compile_step(loss, inputs, params, sb.optim.SGD(lr=LR), profile=True)
        start = time.perf_counter()
        step.epoch(problem.x, problem.y, batch_size=spec.batch, shuffle=False)  # also warms caches and the worker
        epochs = max(1, int(0.5 / (time.perf_counter() - start)))
        step.profile.reset()
        start = time.perf_counter()
        for _ in range(epochs):
            step.epoch(problem.x, problem.y, batch_size=spec.batch, shuffle=False)
        steps = max(row.calls for row in step.profile.rows)
        per_step, inside = (time.perf_counter() - start) / steps, step.profile.total / steps
        print(f"\n{workload.name}: {format_time(per_step)} per step, {format_time(inside)} of it in kernels")
        print(step.profile.table(top=top))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and samples (about a minute)")
    parser.add_argument("--only", help="comma-separated workloads; 'matmul' selects every size")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {','.join(PEERS)}")
    parser.add_argument(
        "--profile", metavar="NAMES", help="print where symbackprop's step time goes, per kernel, and exit"
    )
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--compile-child", help=argparse.SUPPRESS)
    parser.add_argument("--peer", default="ours", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker, args.quick)
    if args.compile_child:
        return print(json.dumps(compile_child(args.compile_child, args.peer)))
    if args.profile:
        return profile_steps(selected(args.profile), args.quick)
    info = description()
    for key, value in info.items():
        print(f"{key}: {value}")
    requested = [p.strip() for p in args.peers.split(",")]
    if "ours" not in requested or not set(requested) <= set(PEERS):
        raise SystemExit(f"--peers: choose from {PEERS}, including ours")
    missing = [p for p in requested if not installed(p)]
    if missing:
        print(f"skipped, not installed: {', '.join(missing)} (pip install {' '.join(missing)})")
    started = time.perf_counter()
    results = run(selected(args.only), [p for p in requested if p not in missing], args.quick)
    print()
    print_table(HEADER, [table_row(r) for r in results])
    print()
    for r in results:
        for line in ([r.check_detail] if r.check_detail else []) + r.notes:
            print(f"{r.workload.name}: {line}")
    print(f"\n{time.perf_counter() - started:.0f} s; load average at the end: {load_average()}")
    if args.json:
        document = {"machine": info, "quick": args.quick, "results": [r.as_json() for r in results]}
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
