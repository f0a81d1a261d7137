"""Checkpoint files: round trip, atomic replacement, refusal of files that do not match."""

import json
import os

import numpy as np
import pytest

from symbackprop.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

PARAMS = {"W1": np.arange(6, dtype=np.float32).reshape(2, 3), "b1": np.ones(3, dtype=np.float32)}
DESCRIPTION = {"model": "mlp", "widths": [2, 3]}


def test_round_trip_keeps_values_dtypes_state_and_extra(tmp_path):
    state = {"W1": {"m": np.full((2, 3), 0.5), "v": np.zeros((2, 3))}}
    path = save_checkpoint(
        tmp_path / "c.npz", PARAMS, description=DESCRIPTION, state=state, steps=7, extra={"epochs": 3}
    )
    loaded = load_checkpoint(path, description=DESCRIPTION, shapes={"W1": (2, 3), "b1": (3,)})
    assert list(loaded.params) == ["W1", "b1"]
    for name, value in PARAMS.items():
        np.testing.assert_array_equal(loaded.params[name], value)
        assert loaded.params[name].dtype == value.dtype
    np.testing.assert_array_equal(loaded.state["W1"]["m"], state["W1"]["m"])
    assert set(loaded.state["W1"]) == {"m", "v"}
    assert loaded.steps == 7 and loaded.extra == {"epochs": 3} and loaded.description == DESCRIPTION


def test_file_is_plain_numpy_without_pickles(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", PARAMS, description=DESCRIPTION)
    with np.load(path, allow_pickle=False) as archive:
        assert json.loads(str(archive["meta"]))["format"] == "symbackprop-checkpoint"
        np.testing.assert_array_equal(archive["param/b1"], PARAMS["b1"])


def test_refuses_another_models_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", PARAMS, description=DESCRIPTION)
    with pytest.raises(CheckpointError, match="different model"):
        load_checkpoint(path, description={"model": "mlp", "widths": [2, 4]})


@pytest.mark.parametrize(
    "shapes, message",
    [
        ({"W1": (2, 3)}, r"params the model does not have \['b1'\]"),
        ({"W1": (2, 3), "b1": (3,), "W2": (3, 1)}, r"params missing from it \['W2'\]"),
        ({"W1": (3, 2), "b1": (3,)}, r"param 'W1' has shape \(2, 3\) in the file, \(3, 2\) in the model"),
    ],
)
def test_refuses_mismatched_names_and_shapes(tmp_path, shapes, message):
    path = save_checkpoint(tmp_path / "c.npz", PARAMS)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, shapes=shapes)


def test_unreadable_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, meta=np.array(json.dumps({"format": "other"})))
    with pytest.raises(CheckpointError, match="not a symbackprop-checkpoint file"):
        load_checkpoint(foreign)


def test_state_for_unknown_params_is_refused_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match=r"optimizer state given for \['W9'\]"):
        save_checkpoint(tmp_path / "c.npz", PARAMS, state={"W9": {"m": np.zeros(1)}})
    assert not list(tmp_path.iterdir())


class SaveInterruptedError(Exception):
    pass


def test_an_interrupted_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.npz", PARAMS, steps=1)
    before = path.read_bytes()

    def fail_midway(file, **arrays):
        file.write(b"half a checkpoint")
        raise SaveInterruptedError

    monkeypatch.setattr(np, "savez", fail_midway)
    with pytest.raises(SaveInterruptedError):
        save_checkpoint(path, {"W1": np.zeros((2, 3))}, steps=2)
    assert path.read_bytes() == before
    assert load_checkpoint(path).steps == 1
    assert os.listdir(tmp_path) == ["c.npz"]  # the temporary file was removed
