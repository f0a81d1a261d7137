"""What :meth:`symbackprop.Trainer.fit` records and who it tells: the history and callbacks.

A callback is any object with some of the methods ``on_fit_begin(trainer)``,
``on_epoch_end(trainer, epoch, logs)`` and ``on_fit_end(trainer, history)``, or a plain
function ``f(epoch, logs)`` called after each epoch. Setting ``trainer.stop_training =
True`` ends the fit after the current epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path


class History:
    """Per-epoch logs of a fit: ``history["loss"]`` is the list of epoch losses.

    >>> h = History()
    >>> h.append({"epoch": 1, "loss": 0.5, "val_loss": 0.6})
    >>> h.append({"epoch": 2, "loss": 0.25, "val_loss": 0.4})
    >>> h["loss"], h.best("val_loss")
    ([0.5, 0.25], {'epoch': 2, 'loss': 0.25, 'val_loss': 0.4})
    >>> print(h)
    epoch    loss  val_loss
        1  0.5000    0.6000
        2  0.2500    0.4000
    """

    def __init__(self, epochs: list[dict] | None = None):
        self.epochs: list[dict] = list(epochs or [])

    def append(self, logs: dict) -> None:
        self.epochs.append(dict(logs))

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, key: str) -> list:
        if not any(key in logs for logs in self.epochs):
            raise KeyError(f"no epoch logged {key!r}; logged: {self.keys()}")
        return [logs.get(key) for logs in self.epochs]

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for logs in self.epochs:
            seen.update(dict.fromkeys(logs))
        return list(seen)

    def best(self, monitor: str = "val_loss", mode: str = "auto") -> dict:
        """The logs of the epoch where ``monitor`` was best (lowest for losses, else highest)."""
        better = improvement(monitor, mode)
        best = None
        for logs in self.epochs:
            if _finite(logs.get(monitor)) and (best is None or better(logs[monitor], best[monitor])):
                best = logs
        if best is None:
            raise KeyError(f"no epoch logged {monitor!r}; logged: {self.keys()}")
        return best

    def to_dict(self) -> dict[str, list]:
        return {key: self[key] for key in self.keys()}

    def __str__(self) -> str:
        columns = [key for key in self.keys() if key != "time"]
        widths = {key: max(len(key), 7) for key in columns}
        lines = ["  ".join(key.rjust(widths[key]) for key in columns)]
        for logs in self.epochs:
            lines.append("  ".join(_cell(logs.get(key), widths[key]) for key in columns))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys()})"


def _cell(value, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.4f}".rjust(width)
    return str(value).rjust(width)


# Names of quantities that improve downwards; anything else (accuracy, F1, ...) improves upwards.
DECREASING = ("loss", "error", "mse", "mae", "huber")


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def improvement(monitor: str, mode: str = "auto") -> Callable[[float, float], bool]:
    """``better(new, best)`` for a monitored quantity: losses and errors go down, scores up.

    >>> improvement("val_mae")(0.1, 0.2), improvement("val_accuracy")(0.1, 0.2)
    (True, False)
    """
    if mode == "auto":
        mode = "min" if any(word in monitor for word in DECREASING) else "max"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return (lambda new, best: new < best) if mode == "min" else (lambda new, best: new > best)


class Callback:
    """Base class with every hook doing nothing; override the ones you need."""

    def on_fit_begin(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        pass

    def on_fit_end(self, trainer, history: History) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the parameters of the best epoch are put back at the end.

    >>> stop = EarlyStopping(monitor="val_loss", patience=2)
    >>> stop
    EarlyStopping(monitor='val_loss', patience=2, min_delta=0.0, restore_best=True)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best: bool = True,
    ):
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be a positive int, got {patience!r}")
        if not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"EarlyStopping: min_delta must be a finite number >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta, self.restore_best = (
            monitor,
            patience,
            float(min_delta),
            restore_best,
        )
        self.better = improvement(monitor, mode)
        self.sign = 1.0 if self.better(0.0, 1.0) else -1.0  # +1 when lower is better

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, restore_best={self.restore_best})"
        )

    def on_fit_begin(self, trainer) -> None:
        self.best, self.best_epoch, self.waited, self.best_params = None, None, 0, None
        self.stopped_epoch = None

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which the fit does not log; it logs {list(logs)}")
        value = logs[self.monitor]
        improved = _finite(value) and (self.best is None or self.better(value + self.sign * self.min_delta, self.best))
        if improved:
            self.best, self.best_epoch, self.waited = value, epoch, 0
            if self.restore_best:
                self.best_params = trainer.get_weights()
            return
        self.waited += 1
        if self.waited >= self.patience:
            self.stopped_epoch = epoch
            trainer.stop_training = True

    def on_fit_end(self, trainer, history: History) -> None:
        if self.restore_best and self.best_params is not None:
            trainer.set_weights(self.best_params)


class ModelCheckpoint(Callback):
    """Save a checkpoint after each epoch, or only when ``monitor`` improves (``save_best_only``).

    Each save is atomic (see :mod:`symbackprop.checkpoint`), so the file on disk is always a
    whole checkpoint, the best one so far with ``save_best_only``.
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True, mode: str = "auto"):
        self.path = Path(path).expanduser()
        self.monitor, self.save_best_only = monitor, save_best_only
        self.better = improvement(monitor, mode)

    def __repr__(self) -> str:
        return f"ModelCheckpoint({str(self.path)!r}, monitor={self.monitor!r}, save_best_only={self.save_best_only})"

    def on_fit_begin(self, trainer) -> None:
        self.best = None

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.save_best_only:
            if self.monitor not in logs:
                raise KeyError(
                    f"ModelCheckpoint monitors {self.monitor!r}, which the fit does not log; it logs {list(logs)}"
                )
            value = logs[self.monitor]
            if not _finite(value) or (self.best is not None and not self.better(value, self.best)):
                return
            self.best = value
        trainer.save(self.path, extra={"logs": logs})
