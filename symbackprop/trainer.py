"""The fit loop: a model, a loss and an optimizer trained through the compiled epoch loop.

:class:`Trainer` builds two graphs from the model, one in training mode (dropout on) for
:func:`symbackprop.compile_step` and one in evaluation mode for validation, ``evaluate``
and ``predict``, and compiles each once. An epoch is one native call
(:meth:`CompiledStep.epoch`); Python runs only between epochs, for validation, metrics,
callbacks and the progress bar.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np

from . import losses, metrics, optim
from .callbacks import Callback, History
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .compiled import compile, compile_step
from .errors import GraphError
from .graph import Tensor, input
from .progress import progress_bar

# Losses by name, for ``Trainer(loss="...")`` and the command line.
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "softmax_cross_entropy": losses.softmax_cross_entropy,
    "binary_cross_entropy": losses.binary_cross_entropy,
    "mse": losses.mse,
    "mae": losses.mae,
    "huber": losses.huber,
}

# Metrics by name: functions of (labels, model outputs) computed on validation data each epoch.
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": metrics.accuracy,
    "precision": partial(metrics.precision, average="macro"),
    "recall": partial(metrics.recall, average="macro"),
    "f1": partial(metrics.f1, average="macro"),
}

# Losses whose targets are class labels: 1-D targets become int64 (whole-number floats too).
LABEL_LOSSES = frozenset({"softmax_cross_entropy"})

# The metrics computed when none are named: class scores only make sense for a classifier.
DEFAULT_METRICS = {"softmax_cross_entropy": ("accuracy",)}

EVALUATION_CHUNK = 4096  # rows per compiled call in evaluate/predict: bounded scratch memory


def _count(name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return int(value)


def _resolve(kind: str, table: Mapping, value):
    if callable(value):
        return getattr(value, "__name__", type(value).__name__), value
    if value not in table:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {sorted(table)} or a function")
    return value, table[value]


class Trainer:
    """Trains a :mod:`symbackprop.nn` model (anything with ``__call__`` building a graph and
    ``parameters()`` naming its params) with a loss and an optimizer.

    ``loss`` is a name from :data:`LOSSES` or a function ``(outputs, targets) -> scalar
    tensor`` (add penalties there); ``metrics`` are names from :data:`METRICS` or functions
    ``(targets, outputs) -> float``, computed on the validation data after each epoch (on
    the training data when there is none). By default a softmax classifier reports its
    accuracy and other losses report nothing more. ``profile=True`` compiles the training
    step with kernel timings, read from ``trainer.step.profile`` after training.

    >>> import numpy as np, symbackprop as sb
    >>> X, targets = sb.data.xor()
    >>> y = targets.ravel().astype(np.int64)  # class labels 0 and 1
    >>> model = sb.nn.Sequential(sb.nn.Dense(2, 8, activation="tanh", seed=0), sb.nn.Dense(8, 2, seed=1))
    >>> trainer = sb.Trainer(model, loss="softmax_cross_entropy", optimizer=sb.optim.Adam(lr=0.05))
    >>> history = trainer.fit(X, y, epochs=200, batch_size=4, progress=False)
    >>> trainer.evaluate(X, y)["accuracy"]
    1.0
    """

    def __init__(
        self,
        model,
        loss="softmax_cross_entropy",
        optimizer: optim.Optimizer | None = None,
        metrics: Sequence | None = None,
        *,
        fast_math: bool = True,
        profile: bool = False,
    ):
        if not callable(model) or not callable(getattr(model, "parameters", None)):
            raise TypeError(f"model must be a symbackprop.nn module (callable, with parameters()), got {model!r}")
        self.model = model
        self.params: dict[str, Tensor] = dict(model.parameters())
        if not self.params:
            raise GraphError(f"the model {type(model).__name__} has no parameters to train")
        self.loss_name, self.loss_fn = _resolve("loss", LOSSES, loss)
        self.optimizer = optimizer if optimizer is not None else optim.Adam(lr=1e-3)
        if not isinstance(self.optimizer, optim.Optimizer):
            raise TypeError(f"optimizer must be one of symbackprop.optim, got {self.optimizer!r}")
        if metrics is None:
            metrics = DEFAULT_METRICS.get(self.loss_name, ())
        if isinstance(metrics, str):
            metrics = (metrics,)
        self.metrics = dict(_resolve("metric", METRICS, m) for m in metrics)
        self.fast_math = fast_math
        self.profile = profile  # time each kernel of the training step: trainer.step.profile
        self.dtype = next(iter(self.params.values())).dtype
        self.history = History()
        self.epochs_done = 0
        self.stop_training = False
        self._signature = None  # (x shape without batch, target shape without batch, target dtype)
        self._step = self._evaluator = self._predictor = None
        self._pending = None  # a loaded checkpoint's optimizer state, applied once the step exists

    def __repr__(self) -> str:
        return f"Trainer({type(self.model).__name__}, loss={self.loss_name!r}, optimizer={self.optimizer!r})"

    # -- graphs and their compiled forms ----------------------------------------------------------
    def _prepare(self, X, y=None):
        """``X`` and ``y`` as contiguous arrays of the dtypes the compiled code takes.

        Integer X stays integer (indices for an ``Embedding``); float X takes the params'
        precision. Targets of a class-label loss are int64 labels; others take the params'
        precision.
        """
        X = np.asarray(X)
        integer = X.dtype.kind in "iu"
        X = np.ascontiguousarray(X, dtype=np.int64 if integer else self.dtype)
        if X.ndim < (1 if integer else 2):
            raise GraphError(f"X must hold one example per row (at least 2-D), got shape {X.shape}")
        if not integer and not np.isfinite(X).all():
            raise GraphError("X holds NaN or infinite values; training needs finite inputs")
        if y is None:
            return X, None
        y = np.asarray(y)
        if len(y) != len(X):
            raise GraphError(f"X has {len(X)} examples but y has {len(y)}; they must have one label/target each")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise GraphError("y holds NaN or infinite values; training needs finite targets")
        return X, self._targets(y)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        if self.loss_name in LOSSES:  # a named loss says whether it takes class labels
            labels = self.loss_name in LABEL_LOSSES and y.ndim == 1
        else:  # a loss function of the user's: integer targets are taken to be labels
            labels = y.dtype.kind in "iub"
        if not labels:
            return np.ascontiguousarray(y, dtype=self.dtype)
        if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
            raise GraphError(f"the {self.loss_name} loss takes class labels 0, 1, 2, ...; y holds fractions")
        return np.ascontiguousarray(y, dtype=np.int64)

    def _graphs(self, X, y):
        signature = (X.shape[1:], y.shape[1:], y.dtype.name)
        if self._signature is not None:
            if signature != self._signature:
                raise GraphError(
                    f"this trainer was built for examples {self._signature[0]} with targets "
                    f"{self._signature[1]} {self._signature[2]}, got {signature[0]} with {signature[1]} {signature[2]}"
                )
            return
        self._signature = signature
        self._x = input("x", (None, *X.shape[1:]), X.dtype.name)
        self._y = input("y", (None, *y.shape[1:]), y.dtype.name)

    def _outputs(self, training: bool) -> tuple[Tensor, Tensor]:
        mode = getattr(self.model, "train", None)
        before = getattr(self.model, "training", True)
        if mode is not None:
            mode(training)
        try:
            out = self.model(self._x)
        finally:
            if mode is not None:
                mode(before)  # the graphs are built; the model keeps the mode the user gave it
        loss = self.loss_fn(out, self._y)
        if not isinstance(loss, Tensor) or loss.shape != ():
            raise GraphError(f"the loss {self.loss_name!r} must give a scalar tensor, got {loss!r}")
        return out, loss

    def build(self, X, y) -> Trainer:
        """Compile the training step for data shaped like ``(X, y)`` (:meth:`fit` does it on
        first use; calling it first separates compile time from training time)."""
        self._graphs(*self._prepare(X[:1], y[:1]))
        self.step  # noqa: B018 - the property compiles
        return self

    @property
    def step(self):
        """The compiled training step (built on the first :meth:`fit` or :meth:`build`)."""
        if self._step is None:
            if self._signature is None:
                raise GraphError("the trainer has not seen any data yet: call fit or build first")
            _, loss = self._outputs(training=True)
            self._step = compile_step(
                loss,
                [self._x, self._y],
                list(self.params.values()),
                self.optimizer,
                fast_math=self.fast_math,
                profile=self.profile,
            )
            pending, self._pending = self._pending, None
            if pending is not None:
                self._apply_state(*pending)
        return self._step

    def _evaluation(self):
        if self._evaluator is None:
            out, loss = self._outputs(training=False)
            self._evaluator = compile([loss, out], [self._x, self._y], fast_math=self.fast_math)
        return self._evaluator

    # -- training ---------------------------------------------------------------------------------
    def fit(
        self,
        X,
        y,
        *,
        epochs: int = 10,
        batch_size: int = 32,
        validation=None,
        shuffle: bool = True,
        seed: int | None = 0,
        callbacks: Sequence = (),
        progress="auto",
    ) -> History:
        """Train for ``epochs`` passes over ``(X, y)``; returns the :class:`History` of this fit.

        ``validation`` is a fraction of the data to hold out (taken after a seeded shuffle)
        or an ``(X_val, y_val)`` pair. The minibatch order of each epoch is drawn from
        ``seed``, so two fits from the same start with the same seed agree exactly.
        ``progress`` draws a bar on a terminal (``"auto"``), always (True) or never (False).
        """
        epochs = _count("epochs", epochs, 0)
        batch_size = _count("batch_size", batch_size, 1)
        X, y = self._prepare(X, y)
        rng = np.random.default_rng(seed)
        X, y, val = self._split(X, y, validation, rng)
        self._graphs(X, y)
        step = self.step
        callbacks = [c if not _is_plain_function(c) else _EpochFunction(c) for c in callbacks]
        history = History()
        self.stop_training = False
        for callback in callbacks:
            callback.on_fit_begin(self)
        try:
            with progress_bar(epochs, "training", progress) as bar:
                for _ in range(epochs):
                    logs = self._epoch(step, X, y, val, batch_size, shuffle, rng)
                    history.append(logs)
                    for callback in callbacks:
                        callback.on_epoch_end(self, self.epochs_done, logs)
                    if not bar.disable:  # formatting the postfix costs more than a small epoch's Python
                        shown = {k: f"{v:.4f}" for k, v in logs.items() if k not in ("epoch", "time")}
                        bar.set_postfix(shown, refresh=False)
                    bar.update()
                    if self.stop_training:
                        break
        finally:
            # Also when an epoch fails: the epochs done stay in the history, and callbacks
            # finish (early stopping puts back the best weights).
            self.history = History(self.history.epochs + history.epochs)
            for callback in callbacks:
                callback.on_fit_end(self, history)
        return history

    def _epoch(self, step, X, y, val, batch_size, shuffle, rng) -> dict:
        """One epoch through the native loop, then validation: the epoch's logs."""
        started = time.perf_counter()
        loss = step.epoch(X, y, batch_size=batch_size, shuffle=shuffle, seed=int(rng.integers(2**63)))
        self.epochs_done += 1
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"the training loss became {loss} in epoch {self.epochs_done} (the inputs are finite); "
                f"try a smaller learning rate than {self.optimizer!r}"
            )
        logs = {"epoch": self.epochs_done, "loss": loss}
        scores = self.evaluate(*val) if val is not None else self._metrics_only(X, y)
        logs.update({(f"val_{k}" if val is not None else k): v for k, v in scores.items()})
        logs["time"] = time.perf_counter() - started
        return logs

    def _split(self, X, y, validation, rng):
        if validation is None:
            return X, y, None
        if isinstance(validation, numbers.Real) and not isinstance(validation, bool):
            validation = float(validation)
            if not 0.0 < validation < 1.0:
                raise ValueError(f"validation as a fraction must be between 0 and 1, got {validation}")
            held = int(round(len(X) * validation))
            if held < 1 or held >= len(X):
                raise ValueError(f"validation={validation} of {len(X)} examples leaves an empty split")
            order = rng.permutation(len(X))
            return X[order[held:]], y[order[held:]], (X[order[:held]], y[order[:held]])
        if isinstance(validation, (tuple, list)) and len(validation) == 2:
            return X, y, self._prepare(*validation)
        raise TypeError(f"validation must be a fraction or an (X, y) pair, got {type(validation).__name__}")

    def _metrics_only(self, X, y) -> dict[str, float]:
        if not self.metrics:
            return {}
        outputs = self.predict(X)
        return {name: float(fn(y, outputs)) for name, fn in self.metrics.items()}

    # -- using the model --------------------------------------------------------------------------
    def evaluate(self, X, y) -> dict[str, float]:
        """The loss and every metric on ``(X, y)``, with the model in evaluation mode."""
        X, y = self._prepare(X, y)
        if not len(X):
            raise GraphError("evaluate: X has no examples")
        self._graphs(X, y)
        evaluator = self._evaluation()
        total, outputs = 0.0, []
        for start in range(0, len(X), EVALUATION_CHUNK):
            rows = slice(start, start + EVALUATION_CHUNK)
            loss, out = evaluator(X[rows], y[rows])
            total += float(loss) * len(X[rows])
            outputs.append(out)
        outputs = np.concatenate(outputs)
        result = {"loss": total / len(X)}
        result.update({name: float(fn(y, outputs)) for name, fn in self.metrics.items()})
        return result

    def predict(self, X) -> np.ndarray:
        """The model's outputs for ``X`` (for a classifier, its logits), in evaluation mode."""
        X, _ = self._prepare(X)
        if self._signature is None:
            raise GraphError("the trainer has not seen any data yet: call fit or build first")
        if X.shape[1:] != self._signature[0]:
            raise GraphError(f"X has examples of shape {X.shape[1:]}; the model was built for {self._signature[0]}")
        if self._predictor is None:
            out, _ = self._outputs(training=False)
            self._predictor = compile(out, [self._x], fast_math=self.fast_math)
            self._prediction_type = (out.shape[1:], out.dtype)
        if not len(X):
            tail, dtype = self._prediction_type
            return np.empty((0, *tail), dtype=dtype)
        return np.concatenate(
            [self._predictor(X[start : start + EVALUATION_CHUNK]) for start in range(0, len(X), EVALUATION_CHUNK)]
        )

    def predict_classes(self, X) -> np.ndarray:
        """The most likely class of each example (the argmax of :meth:`predict`)."""
        return np.argmax(self.predict(X), axis=-1)

    # -- weights and checkpoints ------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's value, by name."""
        return {name: p.value.copy() for name, p in self.params.items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Copy values into the parameters (in place, so compiled code sees them)."""
        for name, value in weights.items():
            if name not in self.params:
                raise KeyError(f"no parameter {name!r}; the model has {list(self.params)}")
            target = self.params[name].value
            value = np.asarray(value)
            if value.shape != target.shape:
                raise GraphError(f"parameter {name!r} has shape {target.shape}, got a value of shape {value.shape}")
            target[...] = value

    def description(self) -> dict:
        """What a checkpoint must match: the model's architecture and the parameter shapes.

        Arguments that only choose starting values (seeds, initialisers) are left out: a
        checkpoint replaces the starting values anyway.
        """
        describe = getattr(self.model, "describe", None)
        return {
            "model": _architecture(describe()) if describe is not None else type(self.model).__name__,
            "params": {name: list(p.shape) for name, p in self.params.items()},
        }

    def save(self, path, extra: dict | None = None):
        """Save parameters, optimizer state and the model's description, atomically."""
        state = {}
        if self._step is not None:
            names = {p: name for name, p in self.params.items()}
            for (p, key), value in self._step.state.items():
                state.setdefault(names[p], {})[key] = value
        steps = self._step.steps if self._step is not None else 0
        extra = {"epochs": self.epochs_done, "optimizer": type(self.optimizer).__name__, **(extra or {})}
        return save_checkpoint(
            path, self.get_weights(), description=self.description(), state=state, steps=steps, extra=extra
        )

    def load(self, path, optimizer_state: bool = True):
        """Restore a checkpoint saved from the same architecture; refuses any other.

        With ``optimizer_state`` the optimizer's state and step count are restored too,
        which needs a checkpoint saved with the same kind of optimizer. Everything is
        checked before anything changes: a refused checkpoint leaves the trainer as it was.
        """
        checkpoint = load_checkpoint(
            path, description=self.description(), shapes={n: p.shape for n, p in self.params.items()}
        )
        if optimizer_state:
            self._check_state(path, checkpoint)
        self.set_weights(checkpoint.params)
        self.epochs_done = int(checkpoint.extra.get("epochs", 0))
        if optimizer_state:
            if self._step is not None:
                self._apply_state(checkpoint.state, checkpoint.steps)
            else:
                self._pending = (checkpoint.state, checkpoint.steps)
        return checkpoint

    def _check_state(self, path, checkpoint) -> None:
        saved, current = checkpoint.extra.get("optimizer"), type(self.optimizer).__name__
        if saved != current:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds {saved}'s optimizer state, this trainer uses {current}; "
                "load the parameters alone with optimizer_state=False"
            )
        expected = set(self.optimizer.state_names)
        if expected and set(checkpoint.state) != set(self.params):
            raise CheckpointError(f"checkpoint {str(path)!r} lacks the optimizer state of some parameters")
        for name, arrays in checkpoint.state.items():
            shape = self.params[name].shape
            if set(arrays) != expected or any(a.shape != shape for a in arrays.values()):
                raise CheckpointError(
                    f"checkpoint {str(path)!r}: the optimizer state of {name!r} is {sorted(arrays)} with shapes "
                    f"{[a.shape for a in arrays.values()]}; {current} keeps {sorted(expected)} of shape {shape}"
                )

    def _apply_state(self, state, steps) -> None:
        step = self._step
        for name, arrays in state.items():
            for key, value in arrays.items():
                step.state[self.params[name], key][...] = value
        step.steps = int(steps)


def _is_starting_value(arg: str) -> bool:
    return arg == "seed" or arg.endswith("init")


def _architecture(description):
    """A module description without the arguments that only choose starting values."""
    if isinstance(description, dict):
        return {
            key: (
                {k: v for k, v in value.items() if not _is_starting_value(k)}
                if key == "args" and isinstance(value, dict)
                else _architecture(value)
            )
            for key, value in description.items()
        }
    if isinstance(description, list):
        return [_architecture(item) for item in description]
    return description


def _is_plain_function(callback) -> bool:
    return callable(callback) and not isinstance(callback, Callback) and not hasattr(callback, "on_epoch_end")


class _EpochFunction(Callback):
    """A plain function ``f(epoch, logs)`` as a callback."""

    def __init__(self, function):
        self.function = function

    def on_epoch_end(self, trainer, epoch, logs):
        self.function(epoch, logs)
