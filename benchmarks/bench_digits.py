"""Training on the embedded handwritten digits, end to end: symbackprop's ``Trainer`` beside
PyTorch, JAX, scikit-learn and NumPy, at equal accuracy.

Run from the repository root with the project importable (``pip install -e .``)::

    python benchmarks/bench_digits.py [--repeats 3] [--epochs 60] [--peers torch,jax,sklearn,numpy] [--json PATH]

The workload: ``sb.data.load_digits(test_fraction=0.2, seed=0)`` (1438 training and 359 test
digits, 64 pixels scaled to [0, 1], 10 classes); a 64-64-10 network, tanh on the hidden
layer, softmax cross-entropy; SGD with momentum 0.9 in PyTorch's convention (``v ← μ·v + g``,
``w ← w − η·v``), lr 0.05; minibatches of 32 (45 per epoch, the last one of 30 digits),
reshuffled every epoch; 60 epochs; float32; two threads for everyone (set as in
bench_training.py, before NumPy, PyTorch or JAX load). Peers that are not installed are
skipped with a note.

The contenders, one row each:

- ``ours fit``: ``sb.Trainer(model, loss="softmax_cross_entropy", optimizer=sb.optim.Momentum(...),
  metrics=())``, ``trainer.build(X, y)`` (the compile, timed apart), then
  ``trainer.fit(X, y, epochs=60, batch_size=32, progress=False)``.
- ``ours epoch loop``: the same compiled step driven by a bare loop of
  ``trainer.step.epoch(X, y, batch_size=32, shuffle=True, seed=...)``, one native call per
  epoch. Its difference from ``ours fit`` is what the fit loop's own Python costs.
- ``torch``: eager PyTorch, ``nn.Linear`` layers, ``torch.optim.SGD(momentum=0.9)``, the usual
  ``zero_grad``/``backward``/``step`` per minibatch over the epoch's rows gathered by index;
  ``torch 1 thread`` the same with ``torch.set_num_threads(1)`` (on a busy machine two
  threads that wait for each other on such small operations can cost far more than they give).
- ``jax jit``: one jitted step per minibatch (parameters and momenta donated), slicing the
  epoch's rows, which one jitted call gathers on the device at the start of each epoch.
- ``jax scan``: the whole epoch in one jitted call: the gather on the device,
  ``jax.lax.scan`` of the step over the 44 full minibatches, then the short last one.
- ``sklearn``: ``MLPClassifier(hidden_layer_sizes=(64,), activation="tanh", solver="sgd",
  learning_rate_init=0.05, momentum=0.9, nesterovs_momentum=False, batch_size=32,
  max_iter=60, alpha=0, tol=0, ...)``, its own initial weights and shuffling.
- ``numpy``: forward and backward written out (bench_training.py's ``NumpyMLP``).

The same problem for all but scikit-learn: every one starts from the weights of the
Trainer's model (``Dense`` seeds 0 and 1) and visits the minibatches in the order
``Trainer.fit`` draws them with its default seed 0 (one seed per epoch from
``np.random.default_rng(0)``, the epoch's permutation from ``np.random.default_rng(that seed)``);
each makes its permutations inside its timed training, as ``fit`` does.

Timing: each framework runs in its own worker process (bench_training.py explains why); a
sample is one whole training from the initial weights, after an untimed epoch that wakes
the process (it slept while the others ran); the workers take their samples in turn, and
the table shows each contender's median over ``--repeats``, its fastest sample (the least
disturbed on a busy machine), the spread of its samples ((slowest − fastest) / median)
and the CPU time other processes used meanwhile ("other load", in cores; 0.00 on an idle
machine). The garbage collector is off while a training is timed. The ratio is to the
fastest peer (everyone but symbackprop).

Warm-up, reported apart: everything before the first timed training: symbackprop's
``trainer.build`` (the compile; ``cold`` with ``SYMBACKPROP_CACHE_DIR`` an empty directory,
which includes the one-time compile of the kernel library, and ``warm`` in a second process
reading that cache), and for everyone a first one-epoch training (JAX traces and compiles
there). Correctness: the weights after that first epoch are compared with the reference's
(PyTorch, else NumPy): largest difference over the largest reference value at most 1e-4
(the ✓ column). Test accuracy and the final training loss come from the final weights
through one NumPy forward pass shared by everyone.

After the samples, symbackprop's worker measures where its time goes (the profile): the
fit loop against the bare epoch loop, the native epoch call alone (its ctypes handle
timed), a Python call of ``step()`` per minibatch, the native time per step at other batch
sizes, and the kernels of the compiled step (``trainer.step.kernel_ir``).
"""

from __future__ import annotations

from common import (
    OtherLoad,
    Worker,
    available,
    blas_threads,
    format_time,
    load_average,
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
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from bench_training import (  # noqa: E402
    DIGITS,
    TOLERANCE,
    NumpyMLP,
    TorchMLP,
    description,
    difference,
    jax_loss_function,
    torch_threads,
)

import symbackprop as sb  # noqa: E402

SPEC = DIGITS  # 64-64-10, tanh, softmax cross-entropy, batch 32
LR = 0.05
MOMENTUM = 0.9
EPOCHS = 60
REPEATS = 3
SEED = 0  # Trainer.fit's default: the seed the epochs' permutations are drawn from
TARGET = 0.20  # ours fit ≤ TARGET × the fastest peer
PAUSE_SECONDS = 0.005  # between samples: lets the last worker's spinning threads go to sleep
PEERS = ["torch", "jax", "sklearn", "numpy"]
PROFILE_BATCHES = (1, 8, 32, 128)  # batch sizes of the profile's native time per step
PROFILE_RUNS = 15  # alternating fit and epoch-loop trainings in the profile


# -- the problem every contender solves ----------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    weights: list[tuple[np.ndarray, np.ndarray]]  # the initial (W, b) of each layer, W in × out

    @classmethod
    def load(cls) -> Problem:
        (X, y), (X_test, y_test) = sb.data.load_digits(test_fraction=0.2, seed=0)
        values = list(dict(model().parameters()).values())
        weights = [(values[i].value.copy(), values[i + 1].value.copy()) for i in range(0, len(values), 2)]
        return cls(X, y, X_test, y_test, weights)

    @property
    def count(self) -> int:
        return len(self.X)

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.count // SPEC.batch)

    def score(self, weights: Sequence[np.ndarray]) -> tuple[float, float]:
        """Test accuracy and training loss of the network with ``weights`` (W1, b1, W2, b2)."""
        network = NumpyMLP(SPEC, list(zip(weights[::2], weights[1::2])))
        accuracy = float(np.mean(np.argmax(network.forward(self.X_test)[-1], axis=1) == self.y_test))
        loss, _ = network.loss_and_delta(network.forward(self.X)[-1], self.y)
        return accuracy, loss


def model():
    """The network the Trainer trains; its initial weights are everyone's."""
    return sb.nn.Sequential(sb.nn.Dense(64, 64, activation="tanh", seed=0), sb.nn.Dense(64, 10, seed=1))


def epoch_seeds(epochs: int) -> Iterator[int]:
    """The seed of each epoch's permutation, drawn as ``Trainer.fit`` draws them."""
    rng = np.random.default_rng(SEED)
    for _ in range(epochs):
        yield int(rng.integers(2**63))


def epoch_orders(epochs: int, count: int) -> Iterator[np.ndarray]:
    """Each epoch's permutation of the examples, as ``CompiledStep.epoch`` makes it from its seed."""
    for seed in epoch_seeds(epochs):
        yield np.random.default_rng(seed).permutation(count)


@dataclass
class Contender:
    """One way to train the network: ``train(epochs)`` from where ``reset()`` leaves it."""

    reset: Callable[[], None]
    train: Callable[[int], None]
    weights: Callable[[], list[np.ndarray]]  # W1, b1, W2, b2, each W in × out
    compile: float | None = None  # seconds of compiling before the first training
    checked: bool = True  # same initial weights and minibatch order: compared with the reference
    trainer: object = None  # symbackprop's Trainer behind the contender, for the profile


# -- symbackprop -----------------------------------------------------------------------------------
def ours(problem: Problem) -> dict[str, Contender]:
    # The back end (llvmlite and the code generator) is imported before the compile is timed,
    # as JAX's backend starts before its first call is: a once-per-process cost of either.
    importlib.import_module("codegen.step")
    trainer = sb.Trainer(
        model(), loss="softmax_cross_entropy", optimizer=sb.optim.Momentum(lr=LR, momentum=MOMENTUM), metrics=()
    )
    start = time.perf_counter()
    trainer.build(problem.X, problem.y)
    compile_seconds = time.perf_counter() - start
    initial = trainer.get_weights()
    step = trainer.step

    def reset():
        trainer.set_weights(initial)
        for velocity in step.state.values():
            velocity[...] = 0
        step.steps = 0

    def fit(epochs):
        trainer.fit(problem.X, problem.y, epochs=epochs, batch_size=SPEC.batch, progress=False)

    def epoch_loop(epochs):
        for seed in epoch_seeds(epochs):
            step.epoch(problem.X, problem.y, batch_size=SPEC.batch, shuffle=True, seed=seed)

    def weights():
        return list(trainer.get_weights().values())

    return {
        "ours fit": Contender(reset, fit, weights, compile_seconds, trainer=trainer),
        "ours epoch loop": Contender(reset, epoch_loop, weights, compile_seconds, trainer=trainer),
    }


class NativeTimer:
    """Times every call of a compiled step's native epoch function (its private ctypes
    handle ``_epoch``), for as long as the block runs."""

    def __init__(self, step):
        self.step, self.seconds = step, []

    def __enter__(self) -> NativeTimer:
        native = self.native = self.step._epoch

        def timed(*args):
            start = time.perf_counter()
            status = native(*args)
            self.seconds.append(time.perf_counter() - start)
            return status

        self.step._epoch = timed
        return self

    def __exit__(self, *exc) -> None:
        self.step._epoch = self.native


def profile(problem: Problem, contenders: dict[str, Contender], epochs: int) -> dict:
    """Where symbackprop's training time goes: per epoch in seconds, the median and the
    fastest of PROFILE_RUNS trainings (on a busy machine the fastest is the least disturbed);
    per step in µs."""
    fit, loop = contenders["ours fit"], contenders["ours epoch loop"]
    trainer, steps = fit.trainer, problem.batches_per_epoch * epochs
    runs: dict[str, list[float]] = {"fit": [], "loop": [], "native": []}
    for _ in range(PROFILE_RUNS):  # alternating, so that load falls on both alike
        for name, contender in (("fit", fit), ("loop", loop)):
            contender.reset()
            with NativeTimer(trainer.step) as native, no_garbage_collection():
                start = time.perf_counter()
                contender.train(epochs)
                runs[name].append(time.perf_counter() - start)
            if name == "loop":
                runs["native"].append(sum(native.seconds))
    result = {}
    for label, pick in (("median", statistics.median), ("fastest", min)):
        fit_s, loop_s, native_s = (pick(runs[k]) / epochs for k in ("fit", "loop", "native"))
        result[f"per epoch, {label} of {PROFILE_RUNS}"] = {
            "fit": fit_s,
            "epoch loop": loop_s,
            "native epoch call": native_s,
            "step.epoch's Python (loop − native)": loop_s - native_s,
            "fit's own Python (fit − loop)": fit_s - loop_s,
        }
    result["per step µs, medians"] = {
        "native (inside epoch)": statistics.median(runs["native"]) / steps * 1e6,
        "fit, all costs": statistics.median(runs["fit"]) / steps * 1e6,
        "step() called from Python": step_call_seconds(trainer.step, problem) * 1e6,
    }
    result["native µs per step by batch size"] = {
        b: native_step_seconds(trainer.step, problem, b) * 1e6 for b in PROFILE_BATCHES
    }
    result["kernels"] = kernel_census(trainer.step.kernel_ir)
    return result


@contextlib.contextmanager
def no_garbage_collection():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def step_call_seconds(step, problem: Problem) -> float:
    """Median seconds of one ``step(x, y)`` call on a minibatch of 32 (each call trains)."""
    x, y = problem.X[: SPEC.batch], problem.y[: SPEC.batch]
    times = []
    with no_garbage_collection():
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(problem.batches_per_epoch):
                step(x, y)
            times.append((time.perf_counter() - start) / problem.batches_per_epoch)
    return statistics.median(times)


def native_step_seconds(step, problem: Problem, batch: int) -> float:
    """Median native seconds per step of an epoch of minibatches of ``batch`` (each trains)."""
    count = min(problem.count, batch * 64)
    with NativeTimer(step) as native, no_garbage_collection():
        for _ in range(5):
            step.epoch(problem.X[:count], problem.y[:count], batch_size=batch, shuffle=False)
    return statistics.median(native.seconds) / -(-count // batch)


def kernel_census(kernel_ir: str) -> dict[str, int]:
    """How many kernels of each kind the step's program runs (the first word of each line
    under ``kernels:``)."""
    lines = kernel_ir.split("kernels:", 1)[1].split("outputs:", 1)[0].splitlines()
    kinds = Counter(line.split()[0] for line in lines if line.strip())
    return {"total": sum(kinds.values()), **dict(kinds.most_common())}


# -- PyTorch ---------------------------------------------------------------------------------------
def torch_contenders(problem: Problem) -> dict[str, Contender]:
    network = TorchMLP(SPEC, problem.weights, lr=LR, momentum=MOMENTUM)
    torch = network.torch
    X, y = torch.from_numpy(problem.X), torch.from_numpy(problem.y)

    def train(epochs):
        for order in epoch_orders(epochs, problem.count):
            index = torch.from_numpy(order)
            xs, ys = X[index], y[index]
            network.epoch(
                [(xs[i : i + SPEC.batch], ys[i : i + SPEC.batch]) for i in range(0, problem.count, SPEC.batch)]
            )

    def weights():
        pairs = ((linear.weight.detach().numpy().T, linear.bias.detach().numpy()) for linear in network.linears)
        return [a.copy() for pair in pairs for a in pair]

    def one_thread(epochs):
        with torch_threads(1):
            train(epochs)

    return {
        "torch": Contender(network.reset, train, weights),
        "torch 1 thread": Contender(network.reset, one_thread, weights),
    }


# -- JAX -------------------------------------------------------------------------------------------
def jax_contenders(problem: Problem) -> dict[str, Contender]:
    import jax
    import jax.numpy as jnp

    value_and_grad = jax.value_and_grad(jax_loss_function(SPEC))
    batch, count = SPEC.batch, problem.count
    full = count // batch * batch  # examples in full minibatches

    def update(state, x, y):
        params, velocities = state
        _, grads = value_and_grad(params, x, y)
        velocities = jax.tree.map(lambda v, g: MOMENTUM * v + g, velocities, grads)
        return jax.tree.map(lambda p, v: p - LR * v, params, velocities), velocities

    @jax.jit
    def gather(X, y, order):
        return X[order], y[order]

    def step(state, xs, ys, start, size):
        return update(
            state, jax.lax.dynamic_slice_in_dim(xs, start, size), jax.lax.dynamic_slice_in_dim(ys, start, size)
        )

    jit_step = jax.jit(step, donate_argnums=0, static_argnums=4)

    def epoch(state, X, y, order):
        xs, ys = X[order], y[order]
        head = (xs[:full].reshape(-1, batch, xs.shape[1]), ys[:full].reshape(-1, batch))
        state, _ = jax.lax.scan(lambda s, b: (update(s, *b), None), state, head)
        return update(state, xs[full:], ys[full:]) if full < count else state

    jit_epoch = jax.jit(epoch, donate_argnums=0)
    X, y = jax.device_put(problem.X), jax.device_put(problem.y.astype(np.int32))
    state = {}

    def reset():
        # Copies: donated buffers are reused for results and must not alias the weights.
        params = [(jnp.array(w), jnp.array(b)) for w, b in problem.weights]
        state["now"] = params, jax.tree.map(jnp.zeros_like, params)

    def jit_train(epochs):
        current = state["now"]
        for order in epoch_orders(epochs, count):
            xs, ys = gather(X, y, jax.device_put(order.astype(np.int32)))
            for start in range(0, count, batch):
                current = jit_step(current, xs, ys, start, min(batch, count - start))
        state["now"] = jax.block_until_ready(current)

    def scan_train(epochs):
        current = state["now"]
        for order in epoch_orders(epochs, count):
            current = jit_epoch(current, X, y, jax.device_put(order.astype(np.int32)))
        state["now"] = jax.block_until_ready(current)

    def weights():
        return [np.asarray(a) for pair in state["now"][0] for a in pair]

    return {"jax jit": Contender(reset, jit_train, weights), "jax scan": Contender(reset, scan_train, weights)}


# -- scikit-learn ----------------------------------------------------------------------------------
def sklearn_contenders(problem: Problem) -> dict[str, Contender]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    fitted = {}

    def train(epochs):
        classifier = MLPClassifier(
            hidden_layer_sizes=(64,),
            activation="tanh",
            solver="sgd",
            learning_rate_init=LR,
            momentum=MOMENTUM,
            nesterovs_momentum=False,
            batch_size=SPEC.batch,
            max_iter=epochs,
            alpha=0.0,
            shuffle=True,
            tol=0.0,
            n_iter_no_change=10**9,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is reached on purpose
            fitted["now"] = classifier.fit(problem.X, problem.y)

    def weights():
        classifier = fitted["now"]
        return [a.astype(np.float32) for pair in zip(classifier.coefs_, classifier.intercepts_) for a in pair]

    return {"sklearn": Contender(fitted.clear, train, weights, checked=False)}


# -- NumPy by hand ---------------------------------------------------------------------------------
def numpy_contenders(problem: Problem) -> dict[str, Contender]:
    network = NumpyMLP(SPEC, problem.weights, lr=LR, momentum=MOMENTUM)

    def train(epochs):
        for order in epoch_orders(epochs, problem.count):
            xs, ys = problem.X[order], problem.y[order]
            network.epoch(
                [(xs[i : i + SPEC.batch], ys[i : i + SPEC.batch]) for i in range(0, problem.count, SPEC.batch)]
            )

    def weights():
        return [a.copy() for pair in network.params for a in pair]

    return {"numpy": Contender(network.reset, train, weights)}


SETUPS = {
    "ours": ours,
    "torch": torch_contenders,
    "jax": jax_contenders,
    "sklearn": sklearn_contenders,
    "numpy": numpy_contenders,
}


# -- worker processes: one per framework -----------------------------------------------------------
def worker(peer: str, epochs: int) -> None:
    """Serve ``setup``, ``sample`` and ``profile`` requests (see :func:`common.serve`)."""
    problem = Problem.load()
    contenders: dict[str, Contender] = {}

    def setup(request: dict) -> dict:
        contenders.update(SETUPS[peer](problem))
        reply = {}
        for name, contender in contenders.items():
            contender.reset()
            start = time.perf_counter()
            contender.train(1)
            first = time.perf_counter() - start
            check = [w.tolist() for w in contender.weights()] if contender.checked else None
            reply[name] = {"compile": contender.compile, "first epoch": first, "check": check}
        return reply

    def sample(request: dict) -> dict:
        reply = {}
        for name, contender in contenders.items():
            contender.reset()
            contender.train(1)  # untimed: wakes the process and its caches after the others ran
            contender.reset()
            with OtherLoad() as load, no_garbage_collection():
                start = time.perf_counter()
                contender.train(epochs)
                seconds = time.perf_counter() - start
            accuracy, loss = problem.score(contender.weights())
            reply[name] = {"seconds": seconds, "accuracy": accuracy, "loss": loss, "load": load.cores}
        return reply

    handlers = {"setup": setup, "sample": sample, "profile": lambda request: profile(problem, contenders, epochs)}
    with blas_threads(THREADS):
        serve(lambda request: handlers[request["command"]](request))


def start_worker(peer: str, epochs: int, directory: Path, cache_dir: str) -> Worker:
    """A worker for ``peer``; symbackprop's compiles into ``cache_dir``."""
    arguments = ["--epochs", str(epochs), "--cache-dir", cache_dir]
    return Worker(__file__, peer, directory, arguments)


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Row:
    """One contender's warm-up, check and samples (one whole training each)."""

    name: str
    compile: float | None = None
    first_epoch: float = 0.0
    check: list | None = None  # weights after the first epoch
    difference: float | None = None  # from the reference's, relative
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)  # cores other processes used meanwhile

    def add(self, sample: dict) -> None:
        for key in ("seconds", "accuracy", "loss", "load"):
            getattr(self, key).append(sample[key])

    @property
    def is_peer(self) -> bool:
        return not self.name.startswith("ours")

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def fastest(self) -> float:
        return min(self.seconds)

    @property
    def spread(self) -> float:
        return (max(self.seconds) - min(self.seconds)) / self.median

    @property
    def warm_up(self) -> float:
        return (self.compile or 0.0) + self.first_epoch

    @property
    def passed(self) -> bool | None:
        return None if self.difference is None else self.difference <= TOLERANCE

    def as_json(self, fastest: float | None, steps: int) -> dict:
        return {
            "contender": self.name,
            "seconds": self.seconds,
            "median_seconds": self.median,
            "fastest_seconds": self.fastest,
            "spread": self.spread,
            "per_step_seconds": self.median / steps,
            "ratio_to_fastest_peer": self.median / fastest if fastest else None,
            "test_accuracy": statistics.median(self.accuracy),
            "train_loss": statistics.median(self.loss),
            "other_load_cores": self.load,
            "compile_seconds": self.compile,
            "first_epoch_seconds": self.first_epoch,
            "difference_after_one_epoch": self.difference,
            "check": self.passed,
        }


@dataclass
class Report:
    """Every contender's row, symbackprop's warm compile and profile, and the notes."""

    epochs: int
    repeats: int
    steps: int  # minibatches in the whole training
    rows: dict[str, Row]
    warm_compile: float | None = None
    cold: bool = True  # the first compile found an empty cache
    profile: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def fastest_peer(self) -> Row | None:
        peers = [r for r in self.rows.values() if r.is_peer]
        return min(peers, key=lambda r: r.median) if peers else None

    @property
    def ratio(self) -> float | None:
        """ours fit over the fastest peer, medians."""
        fastest = self.fastest_peer
        return self.rows["ours fit"].median / fastest.median if fastest else None

    @property
    def ratio_of_fastest(self) -> float | None:
        """The same with each contender's fastest sample, the least disturbed on a busy machine."""
        peers = [r.fastest for r in self.rows.values() if r.is_peer]
        return self.rows["ours fit"].fastest / min(peers) if peers else None

    def as_json(self) -> dict:
        fastest = self.fastest_peer.median if self.fastest_peer else None
        return {
            "epochs": self.epochs,
            "repeats": self.repeats,
            "steps": self.steps,
            "fastest_peer": self.fastest_peer.name if self.fastest_peer else None,
            "ratio": self.ratio,
            "ratio_of_fastest_samples": self.ratio_of_fastest,
            "target": f"ours fit ≤ {TARGET:.2f} × the fastest peer",
            "target_met": None if self.ratio is None else self.ratio <= TARGET,
            "first_compile_cold": self.cold,
            "warm_compile_seconds": self.warm_compile,
            "contenders": [r.as_json(fastest, self.steps) for r in self.rows.values()],
            "profile": self.profile,
            "notes": self.notes,
        }


def benchmark(
    peers: Sequence[str],
    epochs: int = EPOCHS,
    repeats: int = REPEATS,
    profiled: bool = True,
    cache_dir: str | None = None,
) -> Report:
    """Train every contender ``repeats`` times, in turn, each framework in its own worker.

    symbackprop compiles into ``cache_dir``, by default a new empty directory (a cold
    compile); right after, a second process builds the same step from that cache (warm)."""
    steps = Problem.load().batches_per_epoch * epochs
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-digits-")))
        report = Report(epochs, repeats, steps, {}, cold=cache_dir is None)
        cache_dir = cache_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="symbackprop-cache-"))
        workers = [start_worker(peer, epochs, directory, cache_dir) for peer in ["ours", *peers]]
        try:
            for w in workers:
                print(f"setting up {w.name} ...", file=sys.stderr, flush=True)
                for name, reply in w.request(command="setup").items():
                    report.rows[name] = Row(name, reply["compile"], reply["first epoch"], reply["check"])
            report.warm_compile = warm_compile(epochs, directory, cache_dir)
            for index in range(repeats):
                print(f"sample {index + 1} of {repeats} ...", file=sys.stderr, flush=True)
                for w in workers:
                    time.sleep(PAUSE_SECONDS)
                    for name, sample in w.request(command="sample").items():
                        report.rows[name].add(sample)
            if profiled:
                report.profile = workers[0].request(command="profile")
        finally:
            for w in workers:
                w.close()
    check(report)
    return report


def warm_compile(epochs: int, directory: Path, cache_dir: str) -> float:
    """Seconds of ``trainer.build`` in a fresh process finding the step in ``cache_dir``."""
    again = start_worker("ours", epochs, directory, cache_dir)
    try:
        return again.request(command="setup")["ours fit"]["compile"]
    finally:
        again.close()


def check(report: Report) -> None:
    """Each checked row's weights after one epoch against the reference's."""
    reference = next((report.rows[n] for n in ("torch", "numpy") if n in report.rows), None)
    if reference is None:
        report.notes.append("not checked: no reference (torch or numpy) ran")
        return
    for row in report.rows.values():
        if row.check is not None and row is not reference:
            row.difference = difference([np.array(w) for w in row.check], [np.array(w) for w in reference.check])
    report.notes.append(f"✓: weights after one epoch against {reference.name}'s, relative difference ≤ {TOLERANCE:g}")


# -- report ----------------------------------------------------------------------------------------
HEADER = [
    "contender",
    "train time",
    "fastest",
    "spread",
    "/ fastest peer",
    "per step",
    "test acc.",
    "train loss",
    "warm-up",
    "✓",
    "other load",
]


def table_rows(report: Report) -> list[list[str]]:
    fastest = report.fastest_peer
    lines = []
    for row in report.rows.values():
        loads = [f"{v:.2f}" for v in row.load if v == v]
        lines.append(
            [
                row.name,
                format_time(row.median),
                format_time(row.fastest),
                f"{row.spread:.0%}",
                "·" if fastest is None else f"{row.median / fastest.median:.2f}",
                format_time(row.median / report.steps),
                f"{statistics.median(row.accuracy):.2%}",
                f"{statistics.median(row.loss):.4f}",
                format_time(row.warm_up),
                {True: "✓", False: "✗", None: "·"}[row.passed],
                f"{min(loads)}-{max(loads)}" if loads else "·",
            ]
        )
    return lines


def profile_lines(report: Report) -> list[str]:
    """The profile as indented lines: counts as they are, µs figures as numbers, seconds as times."""

    def shown(section: str, value) -> str:
        if isinstance(value, int):
            return str(value)
        return f"{value:.2f}" if "µs" in section else format_time(value)

    return [
        f"  {section}: " + ", ".join(f"{key} {shown(section, value)}" for key, value in values.items())
        for section, values in report.profile.items()
    ]


def print_report(report: Report) -> None:
    print_table(HEADER, table_rows(report))
    print()
    ratio, fastest = report.ratio, report.fastest_peer
    if ratio is not None:
        verdict = "met" if ratio <= TARGET else "MISS"
        print(
            f"target: ours fit ≤ {TARGET:.2f} × the fastest peer ({fastest.name}): {ratio:.2f}, {verdict} "
            f"(fastest samples: {report.ratio_of_fastest:.2f})"
        )
    ours_row = report.rows["ours fit"]
    first = "cold (an empty cache: the kernel library's one-time compile included)" if report.cold else "first"
    print(
        f"symbackprop's compile (trainer.build): {first} {format_time(ours_row.compile)}, "
        f"warm (a second process) {format_time(report.warm_compile)}"
    )
    for row in report.rows.values():
        if row.difference is not None:
            print(f"{row.name}: differs from the reference after one epoch by {row.difference:.1e}")
    for note in report.notes:
        print(note)
    if report.profile:
        print(f"where symbackprop's time goes ({report.epochs} epochs, {report.steps} steps, medians):")
        print("\n".join(profile_lines(report)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="trainings per contender (the median is shown)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per training")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {','.join(PEERS)}")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--no-profile", action="store_true", help="skip the profile of symbackprop's time")
    parser.add_argument(
        "--cache-dir", help="symbackprop's compile cache (default: a new empty directory, so the first compile is cold)"
    )
    parser.add_argument("--worker", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1:
        parser.error(f"--repeats and --epochs must be at least 1, got {args.repeats} and {args.epochs}")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"--peers: unknown {unknown}; choose from {PEERS}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        os.environ["SYMBACKPROP_CACHE_DIR"] = args.cache_dir
        return worker(args.worker, args.epochs)
    info = description()
    for key, value in info.items():
        print(f"{key}: {value}")
    missing = [p for p in args.peers if p != "numpy" and not available(p)]
    if missing:
        print(f"skipped, not installed: {', '.join(missing)}")
    started = time.perf_counter()
    peers = [p for p in args.peers if p not in missing]
    report = benchmark(peers, args.epochs, args.repeats, not args.no_profile, args.cache_dir)
    print()
    print_report(report)
    print(f"\n{time.perf_counter() - started:.0f} s; load average at the end: {load_average()}")
    if args.json:
        document = {"machine": info, **report.as_json()}
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
