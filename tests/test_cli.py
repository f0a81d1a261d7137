"""The ``symbackprop`` command line: training, formulas, checkpoints and one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from codegen.matmul import kernel_parts
from symbackprop.cli import main


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_default_train_reaches_the_accuracy_target(capsys):
    status, out, err = run(capsys, "train", "--json")
    assert status == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["epochs"] == 60 and result["model"] == "64-64-10"
    assert result["test_accuracy"] >= 0.97
    assert result["train_seconds"] < 10
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 359
    assert result["test_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())


def test_human_output_has_report_and_confusion_matrix(capsys):
    status, out, _ = run(capsys, "train", "--epochs", "3", "--model", "64-16-10", "--optimizer", "adam")
    assert status == 0
    assert "64-16-10 (tanh), 1210 parameters; Adam(lr=0.001" in out
    assert "test accuracy:" in out and "macro avg" in out
    assert "confusion matrix (rows: true class, columns: predicted):" in out


def test_profile_prints_the_slowest_kernels_of_the_step(capsys):
    status, out, _ = run(capsys, "train", "--epochs", "2", "--model", "64-16-10", "--profile")
    assert status == 0
    report = out.split("the training step's slowest kernels, over 90 steps:\n")[1].splitlines()
    assert report[0].split() == ["per", "call", "share", "calls", "kernel"]
    assert len(report) == 1 + 8 + 1  # header, the eight slowest, the total
    assert all(line.split()[3] == "90" for line in report[1:-1])  # 45 minibatches an epoch
    assert any("matmul" in line for line in report[1:-1])


def test_checkpoint_then_resume(tmp_path, capsys):
    path = tmp_path / "digits.npz"
    status, out, _ = run(capsys, "train", "--epochs", "2", "--checkpoint", str(path), "--json")
    assert status == 0 and json.loads(out.splitlines()[-1])["checkpoint"] == str(path)
    status, out, _ = run(capsys, "train", "--epochs", "1", "--resume", str(path))
    assert status == 0 and "resumed from" in out and "after 2 epochs" in out
    status, _, err = run(capsys, "train", "--epochs", "1", "--model", "64-32-10", "--resume", str(path))
    assert status == 2 and "different model" in err and len(err.strip().splitlines()) == 1


def test_train_on_a_csv_file_with_a_named_label_column(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    path = tmp_path / "points.csv"
    rows = "\n".join(f"{a:.4f},{label},{b:.4f},{c:.4f}" for (a, b, c), label in zip(X, y))
    path.write_text("a,class,b,c\n" + rows + "\n")
    status, out, err = run(
        capsys, "train", "--data", str(path), "--label-column", "class", "--model", "3-8-2", "--epochs", "30", "--json"
    )
    assert status == 0, err
    assert json.loads(out.splitlines()[-1])["test_accuracy"] >= 0.9


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "64-x-10"], "bad model spec '64-x-10'"),
        (["train", "--model", "32-10"], "takes 32 input features; the data has examples of shape (64,)"),
        (["train", "--model", "64-5"], "ends in 5 outputs; the data has 10 classes"),
        (["train", "--data", "missing.csv"], "missing.csv"),
        (["train", "--data", "data.txt"], "expected 'digits', a .npz or a .csv file"),
        (["train", "--epochs"], "argument --epochs: expected one argument"),
        (["train", "--lr", "-1"], "--lr must be positive"),
        (["train", "--activation", "cube"], "invalid choice: 'cube'"),
        (["fly"], "invalid choice: 'fly'"),
        (["formulas", "--model", "cnn"], "formulas are printed for MLPs"),
        (["train", "--patience", "3"], "--patience needs --validation"),
        (["train", "--dropout", "1.0"], "--dropout must be in [0, 1)"),
        (["train", "--clip-norm", "0"], "--clip-norm must be positive"),
        (["train", "--schedule", "linear"], "invalid choice: 'linear'"),
        (["train", "--model", "cnn", "--data", "missing.npz"], "missing.npz"),
        (["train", "--checkpoint", "."], "is a directory"),
        (["train", "--checkpoint", "no/such/dir/model.npz"], "does not exist"),
        (["train", "--validation", "0.1", "--patience", "0"], "--patience must be at least 1"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(capsys, argv, message):
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.startswith("symbackprop: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_cnn_with_dropout_schedule_clipping_and_early_stopping(capsys):
    status, out, err = run(
        capsys,
        *["train", "--model", "cnn", "--epochs", "2", "--dropout", "0.2", "--schedule", "cosine"],
        *["--warmup", "10", "--clip-norm", "5", "--validation", "0.1", "--patience", "1", "--json"],
    )
    assert status == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["model"] == "cnn" and 1 <= result["epochs"] <= 2
    assert result["test_accuracy"] > 0.5


def test_mlp_preset_and_cnn_preset_differ(capsys):
    status, out, _ = run(capsys, "train", "--model", "cnn", "--epochs", "1")
    assert status == 0 and "Adam(lr=0.002" in out
    status, out, _ = run(capsys, "train", "--epochs", "1", "--dropout", "0.1", "--optimizer", "sgd")
    assert status == 0 and "SGD(lr=0.1" in out


def test_wrong_label_column_in_a_csv(tmp_path, capsys):
    path = tmp_path / "small.csv"
    path.write_text("1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,1\n")
    status, _, err = run(capsys, "train", "--data", str(path), "--label-column", "7")
    assert status == 2 and "column" in err and len(err.strip().splitlines()) == 1


def test_formulas_text_latex_and_optimizer(capsys):
    status, out, _ = run(capsys, "formulas", "--model", "4-3-2")
    assert status == 0
    assert "δ1 = δ2·W2ᵀ ⊙ (1 − h1²)" in out and "∂L/∂W1 = xᵀ·δ1" in out
    status, out, _ = run(capsys, "formulas", "--model", "4-3-2", "--latex", "--optimizer", "momentum")
    assert status == 0 and "\\delta" in out and "\\mu" in out


def test_installed_command_runs_as_a_process():
    result = subprocess.run(
        [sys.executable, "-m", "symbackprop.cli", "formulas", "--model", "2-2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "∂L/∂W1" in result.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``symbackprop formulas | head -1``: the pipe closes before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "symbackprop.cli", "formulas", "--model", "2-2"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""


def test_bench_passes_every_option_to_the_benchmark_script():
    result = subprocess.run(
        [sys.executable, "-m", "symbackprop.cli", "bench", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "bench_training.py" in result.stdout and "--quick" in result.stdout


def test_resume_with_another_optimizer_takes_the_parameters_alone(tmp_path, capsys):
    path = tmp_path / "momentum.npz"
    assert run(capsys, "train", "--epochs", "2", "--checkpoint", str(path), "--json")[0] == 0
    status, out, _ = run(capsys, "train", "--epochs", "2", "--optimizer", "rmsprop", "--resume", str(path))
    assert status == 0 and "(parameters only: it was trained with Momentum)" in out


def test_resume_continues_a_schedule_instead_of_restarting_past_its_end(tmp_path, capsys):
    path = tmp_path / "cosine.npz"
    options = ["--epochs", "3", "--optimizer", "adam", "--lr", "0.01", "--schedule", "cosine"]
    assert run(capsys, "train", *options, "--checkpoint", str(path), "--json")[0] == 0
    status, out, _ = run(capsys, "train", *options, "--resume", str(path))
    assert status == 0 and "cosine(lr=0.01, total_steps=270" in out


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([-1, 0, 1, 0] * 10), "classes 0, 1, 2, ... (found -1"),
        (np.eye(2)[np.arange(40) % 2], "one class number per example, got shape (40, 2)"),
        (np.linspace(0, 1, 40), "classes 0, 1, 2, ... (found 0.0256"),
    ],
)
def test_labels_that_are_not_classes_are_named(tmp_path, capsys, labels, message):
    path = tmp_path / "points.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(40, 3)), y=labels)
    status, _, err = run(capsys, "train", "--data", str(path), "--model", "3-4-2")
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cache_builds_the_kernel_library_ahead_of_a_first_model_and_clears(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYMBACKPROP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMBACKPROP_CACHE", "1")
    modules = len(kernel_parts("float64")) + 4  # the parts, and a module per transposition
    status, out, _ = run(capsys, "cache", "--dtype", "float64")
    assert (
        status == 0 and f"cache: {tmp_path} (on)" in out and "float64 on " in out and f": 0 of {modules} modules" in out
    )
    status, out, _ = run(capsys, "cache", "build", "--dtype", "float64")
    assert status == 0 and f"built {modules} modules" in out and f": {modules} of {modules} modules built" in out
    status, out, _ = run(capsys, "cache", "build", "--dtype", "float64")
    assert status == 0 and "built 0 modules" in out  # nothing left to build
    entries = len(list(tmp_path.glob("*.o")))
    status, out, _ = run(capsys, "cache", "clear")
    assert status == 0 and out.startswith(f"removed {entries} entries") and not list(tmp_path.glob("*.o"))


def test_cache_build_refuses_when_the_cache_is_off(monkeypatch, capsys):
    monkeypatch.setenv("SYMBACKPROP_CACHE", "0")
    status, _, err = run(capsys, "cache", "build")
    assert status == 2 and "the compile cache is off" in err


def test_python_dash_m_runs_the_same_command_line(tmp_path):
    env = dict(os.environ, SYMBACKPROP_CACHE_DIR=str(tmp_path), SYMBACKPROP_CACHE_MAX_MB="0")
    done = subprocess.run(
        [sys.executable, "-m", "symbackprop", "cache", "--dtype", "float32"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"cache: {tmp_path} (on), 0 entries" in done.stdout and "no bound" in done.stdout
