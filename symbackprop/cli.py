"""The ``symbackprop`` command: ``train``, ``formulas``, ``cache`` and ``bench``.

Every mistake a user can make on the command line (a bad model spec, a missing file, a
label column that is not there) ends in one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import data as datasets
from . import metrics, nn, optim, schedules
from .autodiff import grad
from .callbacks import EarlyStopping
from .checkpoint import CheckpointError, load_checkpoint
from .errors import GraphError
from .formula import formula
from .graph import input
from .losses import softmax_cross_entropy
from .trainer import Trainer

USAGE_ERROR = 2

# Optimizers by command-line name: (learning rate, momentum, clip norm) -> optimizer.
OPTIMIZERS = {
    "sgd": lambda lr, momentum, clip: optim.SGD(lr=lr, clip_norm=clip),
    "momentum": lambda lr, momentum, clip: optim.Momentum(lr=lr, momentum=momentum, clip_norm=clip),
    "nesterov": lambda lr, momentum, clip: optim.Momentum(lr=lr, momentum=momentum, nesterov=True, clip_norm=clip),
    "adam": lambda lr, momentum, clip: optim.Adam(lr=lr, clip_norm=clip),
    "adamw": lambda lr, momentum, clip: optim.AdamW(lr=lr, clip_norm=clip),
    "rmsprop": lambda lr, momentum, clip: optim.RMSProp(lr=lr, clip_norm=clip),
}

# What an option left out means, per kind of model: a dense net trains well with momentum
# over 60 epochs; the CNN with Adam over 20.
PRESETS = {
    "mlp": {"optimizer": "momentum", "lr": 0.05, "epochs": 60},
    "cnn": {"optimizer": "adam", "lr": 0.002, "epochs": 20},
}

# The learning rate an optimizer named with --optimizer starts from when --lr is not given.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}

# Learning-rate schedules over the whole run: (lr, total steps) -> schedule.
SCHEDULES = {
    "constant": lambda lr, total: lr,
    "cosine": lambda lr, total: schedules.cosine(lr, total_steps=total),
    "exponential": lambda lr, total: schedules.exponential(lr, gamma=0.01 ** (1 / total)),  # ends at lr/100
}

ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "leaky_relu")
PROFILE_ROWS = 8  # kernels shown by train --profile


class UsageError(Exception):
    """A mistake on the command line, reported as one line."""


# -- models -----------------------------------------------------------------------------------------
def parse_spec(spec: str, alternatives: str = ", or 'cnn'") -> list[int]:
    """Layer widths from a spec such as ``"64-32-10"`` (input, hidden..., output).

    >>> parse_spec("64-32-10")
    [64, 32, 10]
    """
    parts = spec.split("-")
    if len(parts) < 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(
            f"bad model spec {spec!r}: expected layer widths joined by '-', input first and classes last, "
            f"such as 64-32-10{alternatives}"
        )
    return [int(p) for p in parts]


def mlp(widths: list[int], activation: str, seed: int, dropout: float = 0.0) -> nn.Sequential:
    """A multilayer perceptron: ``activation`` (and dropout) after every layer but the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        last = i == len(widths) - 2
        layers.append(nn.Dense(a, b, activation=None if last else activation, seed=seed + i))
        if dropout and not last:
            layers.append(nn.Dropout(dropout, seed=seed + 100 + i))
    return nn.Sequential(*layers)


def cnn(image_shape: tuple[int, ...], classes: int, seed: int, dropout: float = 0.0) -> nn.Sequential:
    """A 3×3 convolution with 16 channels, 2×2 max pooling and two dense layers."""
    height, width, channels = image_shape
    layers = [
        nn.Conv2D(channels, 16, 3, padding="same", activation="relu", seed=seed),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dense((height // 2) * (width // 2) * 16, 128, activation="relu", seed=seed + 1),
        nn.Dense(128, classes, seed=seed + 2),
    ]
    if dropout:
        layers.insert(4, nn.Dropout(dropout, seed=seed + 100))
    return nn.Sequential(*layers)


def build_model(args, features: tuple[int, ...], classes: int):
    """The model ``--model`` names, checked against the data's shape and number of classes."""
    if args.model == "cnn":
        if len(features) != 3:
            raise UsageError(
                f"the cnn model needs images (height, width, channels); the data has examples of shape {features}"
            )
        if min(features[:2]) < 2:
            raise UsageError(f"the cnn model needs images of at least 2×2 pixels, got {features[:2]}")
        return cnn(features, classes, args.seed, args.dropout)
    widths = parse_spec(args.model)
    if len(features) != 1 or widths[0] != features[0]:
        raise UsageError(
            f"model spec {args.model!r} takes {widths[0]} input features; the data has examples of shape {features}"
        )
    if widths[-1] != classes:
        raise UsageError(f"model spec {args.model!r} ends in {widths[-1]} outputs; the data has {classes} classes")
    return mlp(widths, args.activation, args.seed, args.dropout)


def fill_in_defaults(args) -> None:
    """Options left out take the values of the model's preset (see :data:`PRESETS`)."""
    preset = PRESETS["cnn" if args.model == "cnn" else "mlp"]
    if args.optimizer is None:
        args.optimizer = preset["optimizer"]
        args.lr = preset["lr"] if args.lr is None else args.lr
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    if args.epochs is None:
        args.epochs = preset["epochs"]
    checks = {
        "--lr must be positive": args.lr > 0,
        "--epochs must be at least 1": args.epochs >= 1,
        "--batch-size must be at least 1": args.batch_size >= 1,
        "--dropout must be in [0, 1)": 0 <= args.dropout < 1,
        "--test-fraction must be between 0 and 1": 0 < args.test_fraction < 1,
        "--validation must be between 0 and 1": args.validation is None or 0 < args.validation < 1,
        "--patience must be at least 1": args.patience is None or args.patience >= 1,
        "--patience needs --validation (it watches the validation loss)": not args.patience or args.validation,
        "--clip-norm must be positive": args.clip_norm is None or args.clip_norm > 0,
        "--warmup must be at least 0 steps": args.warmup >= 0,
    }
    for message, ok in checks.items():
        if not ok:
            raise UsageError(message)


def make_optimizer(args, steps_per_epoch: int, steps_before: int = 0):
    """The optimizer the options name; a schedule spans this run's steps after ``steps_before``
    (the steps a resumed checkpoint has taken), so a resumed run continues its curve."""
    total = steps_before + args.epochs * steps_per_epoch
    lr = SCHEDULES[args.schedule](args.lr, total)
    if args.warmup:
        lr = schedules.warmup(lr, args.warmup)
    return OPTIMIZERS[args.optimizer](lr, args.momentum, args.clip_norm)


# -- data -------------------------------------------------------------------------------------------
def load_data(args):
    """``(name, (X_train, y_train), (X_test, y_test))`` from ``--data``."""
    images = args.model == "cnn"
    if args.data == "digits":
        split = datasets.load_digits(
            test_fraction=args.test_fraction, seed=args.seed, shape="image" if images else "flat"
        )
        return "digits", split.train, split.test
    path = Path(args.data)
    loaders = {
        ".npz": lambda: datasets.load_npz(path),
        ".csv": lambda: datasets.load_csv(path, label_column=label_column(args.label_column)),
    }
    if path.suffix not in loaders:
        raise UsageError(f"--data {args.data!r}: expected 'digits', a .npz or a .csv file")
    X, y = loaders[path.suffix]()
    check_labels(args.data, y)
    split = datasets.train_test_split(X, y, test_fraction=args.test_fraction, seed=args.seed)
    return str(path), split.train, split.test


def check_labels(source: str, y) -> None:
    """Class labels for a classifier: one whole number from 0 up per example."""
    if y.ndim != 1:
        raise UsageError(f"--data {source!r}: the labels must be one class number per example, got shape {y.shape}")
    bad = (y < 0) | (y != np.round(y))
    if bad.any():
        found = y[np.argmax(bad)]
        raise UsageError(
            f"--data {source!r}: the labels must be classes 0, 1, 2, ... (found {found}); "
            "is --label-column pointing at the label column?"
        )


def label_column(text: str) -> int | str:
    """``--label-column`` as a column index when it is a number, else a header name."""
    try:
        return int(text)
    except ValueError:
        return text


# -- commands ---------------------------------------------------------------------------------------
def check_writable(path: str) -> None:
    """Refuse a checkpoint path that cannot be written, before any training is spent."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise UsageError(f"--checkpoint {path!r} is a directory; give a file name such as {path}/model.npz")
    if not target.parent.is_dir():
        raise UsageError(f"--checkpoint {path!r}: the directory {str(target.parent)!r} does not exist")


def train(args) -> int:
    fill_in_defaults(args)
    if args.checkpoint:
        check_writable(args.checkpoint)
    name, (X, y), (X_test, y_test) = load_data(args)
    classes = int(max(y.max(), y_test.max())) + 1
    model = build_model(args, tuple(X.shape[1:]), classes)
    resumed = load_checkpoint(args.resume) if args.resume else None
    training_rows = len(X) - (round(len(X) * args.validation) if args.validation else 0)
    optimizer = make_optimizer(
        args, steps_per_epoch=-(-training_rows // args.batch_size), steps_before=resumed.steps if resumed else 0
    )
    trainer = Trainer(
        model, loss="softmax_cross_entropy", optimizer=optimizer, metrics=("accuracy",), profile=args.profile
    )
    say = (lambda *a: None) if args.json else print
    count = sum(p.value.size for p in trainer.params.values())
    kind = "relu" if args.model == "cnn" else args.activation
    say(f"data: {name}: {len(X)} training and {len(X_test)} test examples, {classes} classes")
    say(f"model: {args.model} ({kind}), {count} parameters; {optimizer!r}")
    started = time.perf_counter()
    trainer.build(X, y)  # compiled first, so the training time below is training alone
    compile_seconds = time.perf_counter() - started
    say(f"compiled in {compile_seconds:.2f} s")
    if resumed is not None:
        # The optimizer's state carries over only to the same kind of optimizer.
        same = resumed.extra.get("optimizer") == type(optimizer).__name__
        trainer.load(args.resume, optimizer_state=same)
        kept = "" if same else f" (parameters only: it was trained with {resumed.extra.get('optimizer')})"
        say(f"resumed from {args.resume} after {trainer.epochs_done} epochs{kept}")
    started = time.perf_counter()
    progress = False if args.json else "auto"
    stopping = [EarlyStopping(monitor="val_loss", patience=args.patience)] if args.patience else []
    history = trainer.fit(
        X,
        y,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=args.validation,
        seed=args.seed,
        callbacks=stopping,
        progress=progress,
    )
    train_seconds = time.perf_counter() - started
    predicted = trainer.predict_classes(X_test)
    result = {
        "data": name,
        "model": args.model,
        "epochs": len(history),
        "train_loss": history["loss"][-1] if len(history) else None,
        "train_seconds": round(train_seconds, 4),
        "compile_seconds": round(compile_seconds, 4),
        "test_accuracy": metrics.accuracy(y_test, predicted),
        "test_precision": metrics.precision(y_test, predicted, average="macro"),
        "test_recall": metrics.recall(y_test, predicted, average="macro"),
        "test_f1": metrics.f1(y_test, predicted, average="macro"),
        "confusion_matrix": metrics.confusion_matrix(y_test, predicted, num_classes=classes).tolist(),
    }
    if args.checkpoint:
        trainer.save(args.checkpoint)
        result["checkpoint"] = str(args.checkpoint)
    if args.json:
        print(json.dumps(result))
        return 0
    final = f"final training loss {result['train_loss']:.4f}, " if len(history) else ""
    print(f"trained {len(history)} epochs in {train_seconds:.2f} s ({final}batch {args.batch_size})")
    print(f"test accuracy: {100 * result['test_accuracy']:.2f} %")
    print()
    print(metrics.classification_report(y_test, predicted))
    print()
    print("confusion matrix (rows: true class, columns: predicted):")
    print(metrics.format_confusion_matrix(np.array(result["confusion_matrix"])))
    if args.checkpoint:
        print(f"\ncheckpoint saved to {args.checkpoint}")
    if args.profile:
        steps = max(row.calls for row in trainer.step.profile.rows)
        print(f"\nthe training step's slowest kernels, over {steps} steps:")
        print(trainer.step.profile.table(top=PROFILE_ROWS))
    return 0


def formulas(args) -> int:
    widths = parse_spec(args.model, alternatives=" (formulas are printed for MLPs)")
    model = mlp(widths, args.activation, seed=0)
    x = input("x", (None, widths[0]))
    y = input("y", (None,), "int64")
    loss = softmax_cross_entropy(model(x), y)
    derived = formula(grad(loss, list(model.parameters().values())))
    print(derived.latex() if args.latex else derived)
    if args.optimizer:
        rules = OPTIMIZERS[args.optimizer](args.lr or DEFAULT_LR[args.optimizer], args.momentum, None).formula()
        print()
        print(rules.latex() if args.latex else rules)
    return 0


def cache_command(args) -> int:
    """``symbackprop cache [info|build|clear]``: the compile cache of this machine."""
    from codegen import cache, library  # the back end, imported only for this command
    from codegen.target import host_spec

    directory, dtypes = cache.cache_dir(), args.dtype or list(library.DTYPES)
    if args.action == "clear":
        print(f"removed {cache.clear()} entries from {directory}")
        return 0
    if args.action == "build":
        if not cache.cache_enabled():
            raise UsageError(f"the compile cache is off ({cache.ENABLE_VAR}=0): there is nowhere to build the library")
        start = time.perf_counter()
        built = library.build(dtypes)
        print(f"built {len(built)} modules of the kernel library in {time.perf_counter() - start:.2f} s")
    state = "on" if cache.cache_enabled() else f"off ({cache.ENABLE_VAR}=0)"
    count, size = cache.entries()
    bound = cache.max_size()
    limit = f"at most {bound / 2**20:g} MB" if bound else f"no bound, {cache.MAX_SIZE_VAR}=0"
    print(f"cache: {directory} ({state}), {count} entries, {size / 2**20:.1f} MB ({limit})")
    modules = library.cached(dtypes)
    for dtype in dtypes:
        present = [ok for unit, ok in modules.items() if unit.startswith(f"{dtype}:")]
        print(f"kernel library, {dtype} on {host_spec().cpu}: {sum(present)} of {len(present)} modules built")
    return 0


def bench(options: list[str]) -> int:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"
    if not script.is_file():
        raise UsageError(f"the benchmark script is part of a source checkout; {script} was not found")
    return subprocess.call([sys.executable, str(script), *options])


# -- the parser -------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit status 2."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="symbackprop", description="Train networks whose gradients SymPy derives and LLVM compiles.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = commands.add_parser("train", help="train a classifier (default: an MLP on the embedded digits)")
    run.add_argument("--data", default="digits", help="'digits' (embedded), or a .npz (x, y) or .csv file")
    run.add_argument(
        "--label-column", default="-1", help="the CSV column holding the labels: an index or a header name"
    )
    run.add_argument("--model", default="64-64-10", help="layer widths such as 64-32-10, or 'cnn' (default 64-64-10)")
    run.add_argument("--activation", default="tanh", choices=ACTIVATIONS, help="hidden-layer activation (default tanh)")
    run.add_argument("--dropout", type=float, default=0.0, help="dropout rate after each hidden layer (default 0)")
    run.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="default: momentum for an MLP, adam for the cnn")
    run.add_argument("--lr", type=float, help="learning rate (default: 0.05 for the MLP's momentum, 0.002 for the cnn)")
    run.add_argument("--momentum", type=float, default=0.9, help="momentum coefficient (default 0.9)")
    run.add_argument("--schedule", default="constant", choices=sorted(SCHEDULES), help="learning rate over the run")
    run.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up (default 0)")
    run.add_argument("--clip-norm", type=float, help="clip the gradients' global L2 norm to this value")
    run.add_argument("--epochs", type=int, help="passes over the training data (default 60 for an MLP, 20 for the cnn)")
    run.add_argument("--batch-size", type=int, default=32, help="examples per step (default 32)")
    run.add_argument("--validation", type=float, help="share of the training data held out for validation")
    run.add_argument("--patience", type=int, help="stop after this many epochs without a better validation loss")
    run.add_argument("--seed", type=int, default=0, help="seed of the split, the initial weights and the order")
    run.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the data (default 0.2)")
    run.add_argument("--checkpoint", help="save the trained parameters and optimizer state to this .npz file")
    run.add_argument("--resume", help="start from a checkpoint saved by --checkpoint")
    run.add_argument("--json", action="store_true", help="print only the final metrics, as one JSON object")
    run.add_argument("--profile", action="store_true", help="time each kernel of the step; print the slowest")
    run.set_defaults(handler=train)

    show = commands.add_parser("formulas", help="print the derived gradient formulas of an MLP")
    show.add_argument("--model", default="64-64-10", help="layer widths such as 64-32-10 (default 64-64-10)")
    show.add_argument("--activation", default="tanh", choices=ACTIVATIONS)
    show.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="also print this optimizer's update rules")
    show.add_argument("--lr", type=float, default=None)
    show.add_argument("--momentum", type=float, default=0.9)
    show.add_argument("--latex", action="store_true", help="print LaTeX instead of text")
    show.set_defaults(handler=formulas)

    stored = commands.add_parser("cache", help="show, build ahead of a first model, or clear the compile cache")
    stored.add_argument("action", nargs="?", default="info", choices=("info", "build", "clear"))
    stored.add_argument(
        "--dtype",
        action="append",
        choices=("float32", "float64"),
        help="the precisions of the kernel library to show or build (default both; repeat for both)",
    )
    stored.set_defaults(handler=cache_command)

    timing = commands.add_parser("bench", help="run the training benchmark against the installed peers")
    timing.add_argument("options", nargs=argparse.REMAINDER, help="passed to benchmarks/bench_training.py (try --help)")
    timing.set_defaults(handler=lambda args: bench(args.options))
    return top


# Errors that are the user's to fix: printed as one line, exit status 2.
# (GraphError, CheckpointError and DataError are ValueErrors raised for bad input; other
# ValueErrors would be bugs, and keep their traceback.)
USER_ERRORS = (UsageError, GraphError, CheckpointError, datasets.DataError, OSError, ArithmeticError)


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["bench"]:
            return bench(argv[1:])  # every option, --help included, is the benchmark script's
        args = parser().parse_args(argv)
        return args.handler(args)
    except BrokenPipeError:  # before USER_ERRORS, which catches every OSError
        # The reader went away (``symbackprop train | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as error:
        message = " ".join(line.strip() for line in str(error).splitlines()) or type(error).__name__
        print(f"symbackprop: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("symbackprop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
