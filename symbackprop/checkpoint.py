"""Checkpoints: parameters, optimizer state and the model's description in one ``.npz`` file.

A checkpoint is written to a temporary file beside its destination, flushed to disk and
then renamed over it. A rename within one directory is atomic, so an interrupted save
leaves the previous checkpoint whole. Loading checks the description, the names and the
shapes against the model before touching a single parameter.

The file is a NumPy ``.npz`` archive with no pickled objects: ``meta`` (JSON text),
``param/<name>`` per parameter and ``state/<name>/<state>`` per optimizer state array, so
it can be read without symbackprop (``numpy.load(path)``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

FORMAT = "symbackprop-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not match the model it is loaded into."""


def save_checkpoint(
    path,
    params: Mapping[str, np.ndarray],
    *,
    description: dict | None = None,
    state: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    steps: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its path.

    ``params`` maps parameter names to arrays, ``state`` maps the same names to their
    optimizer state arrays (``{"W1": {"v": ...}}``), ``description`` says what the model is
    (any JSON value; :func:`load_checkpoint` refuses a file whose description differs) and
    ``extra`` holds anything else JSON can carry (the epoch, the history, ...).

    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
    >>> _ = save_checkpoint(path, {"w": np.ones(2)}, description={"type": "demo"}, steps=3)
    >>> loaded = load_checkpoint(path, description={"type": "demo"})
    >>> loaded.params["w"].tolist(), loaded.steps
    ([1.0, 1.0], 3)
    """
    path = Path(path)
    state = state or {}
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise CheckpointError(f"optimizer state given for {unknown}, which are not among the params {list(params)}")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "description": description,
        "params": {name: [list(np.shape(a)), str(np.asarray(a).dtype)] for name, a in params.items()},
        "steps": int(steps),
        "extra": extra or {},
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    arrays.update({f"param/{name}": np.asarray(a) for name, a in params.items()})
    for name, states in state.items():
        arrays.update({f"state/{name}/{key}": np.asarray(a) for key, a in states.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        # Whatever stopped the write (a full disk, Ctrl-C), the old checkpoint is untouched.
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


class Checkpoint:
    """What :func:`load_checkpoint` read: ``params``, ``state``, ``steps``, ``description``, ``extra``."""

    def __init__(self, params, state, steps, description, extra):
        self.params = params
        self.state = state
        self.steps = steps
        self.description = description
        self.extra = extra

    def __repr__(self) -> str:
        return f"Checkpoint(params={list(self.params)}, steps={self.steps})"


def load_checkpoint(path, *, description=None, shapes: Mapping[str, tuple] | None = None) -> Checkpoint:
    """Read a checkpoint, refusing it when it does not match what it is loaded into.

    With ``description``, the stored description must equal it; with ``shapes``
    (``{name: shape}``), the stored params must have exactly those names and shapes. The
    error names the first difference.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            arrays = {key: archive[key] for key in archive.files if key != "meta"}
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{str(path)!r} is not a readable checkpoint ({error})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(
            f"{str(path)!r} is not a {FORMAT} file of version {VERSION} "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    if description is not None and meta["description"] != description:
        where, saved, current = first_difference(meta["description"], json.loads(json.dumps(description)))
        raise CheckpointError(
            f"checkpoint {str(path)!r} was saved from a different model: at {where or 'the top'} "
            f"the file has {json.dumps(saved)}, this model {json.dumps(current)}"
        )
    params = {name: arrays[f"param/{name}"] for name in meta["params"]}
    if shapes is not None:
        _check_shapes(path, params, shapes)
    state: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        if key.startswith("state/"):
            name, _, state_name = key[len("state/") :].rpartition("/")
            state.setdefault(name, {})[state_name] = array
    return Checkpoint(params, state, meta["steps"], meta["description"], meta["extra"])


def first_difference(saved, current, where: str = ""):
    """``(path, saved value, current value)`` at the first place two JSON values differ.

    >>> first_difference({"a": [1, 2]}, {"a": [1, 3]})
    ('a.1', 2, 3)
    """
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in [*saved, *(k for k in current if k not in saved)]:
            if saved.get(key) != current.get(key):
                return first_difference(saved.get(key), current.get(key), f"{where}.{key}" if where else str(key))
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for index, (a, b) in enumerate(zip(saved, current)):
            if a != b:
                return first_difference(a, b, f"{where}.{index}" if where else str(index))
    return where, saved, current


def _check_shapes(path, params, shapes) -> None:
    missing = [name for name in shapes if name not in params]
    unexpected = [name for name in params if name not in shapes]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the model: params missing from it {missing}, "
            f"params the model does not have {unexpected}"
        )
    for name, shape in shapes.items():
        if tuple(params[name].shape) != tuple(shape):
            raise CheckpointError(
                f"checkpoint {str(path)!r} does not match the model: param {name!r} has shape "
                f"{tuple(params[name].shape)} in the file, {tuple(shape)} in the model"
            )
