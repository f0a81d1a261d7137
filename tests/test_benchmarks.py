"""The digits benchmark runs end to end (one epoch, symbackprop and NumPy) and its outputs parse."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.cache import cache_dir

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_digits.py"
CONTENDERS = ["ours fit", "ours epoch loop", "numpy"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One run of bench_digits.py: its printed table and its JSON document."""
    path = tmp_path_factory.mktemp("bench") / "digits.json"
    command = [sys.executable, str(SCRIPT), "--epochs", "1", "--repeats", "1", "--peers", "numpy", "--json", str(path)]
    # The usual compile cache: the kernel library is then compiled once per machine, not per test run.
    command += ["--cache-dir", str(cache_dir())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(path.read_text())


def test_json_has_every_contender_trained_and_checked(digits_run):
    _, document = digits_run
    rows = {row["contender"]: row for row in document["contenders"]}
    assert list(rows) == CONTENDERS
    assert document["epochs"] == 1 and document["steps"] == 45  # 1438 digits in minibatches of 32
    for row in rows.values():
        assert len(row["seconds"]) == 1 and row["median_seconds"] > 0
        assert 0.5 < row["test_accuracy"] <= 1.0  # one epoch of SGD with momentum learns the digits
    # Same initial weights and minibatch order as NumPy: the same weights after one epoch.
    assert rows["ours fit"]["check"] is True and rows["ours epoch loop"]["check"] is True
    assert rows["ours fit"]["test_accuracy"] == pytest.approx(rows["numpy"]["test_accuracy"], abs=0.01)
    assert document["fastest_peer"] == "numpy"
    assert document["ratio"] == pytest.approx(rows["ours fit"]["median_seconds"] / rows["numpy"]["median_seconds"])


def test_json_has_the_profile_of_symbackprop(digits_run):
    _, document = digits_run
    profile = document["profile"]
    assert (
        0 < profile["per epoch, fastest of 15"]["native epoch call"] <= profile["per epoch, median of 15"]["epoch loop"]
    )
    assert profile["kernels"]["matmul"] >= 4  # two forward products, at least two in the backward pass
    assert set(profile["native µs per step by batch size"]) == {"1", "8", "32", "128"}


def test_printed_table_has_a_row_per_contender(digits_run):
    printed, _ = digits_run
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    header, *rows = ([cell.strip() for cell in line.strip("|").split("|")] for line in table)
    assert header[:2] == ["contender", "train time"]
    assert [row[0] for row in rows] == CONTENDERS
    assert all(len(row) == len(header) for row in rows)
    assert "target: ours fit ≤ 0.20 × the fastest peer (numpy)" in printed


def test_training_benchmark_profiles_symbackprops_steps():
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--profile", "tiny,swish", "--quick"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    tiny = done.stdout.split("\ntiny: ")[1]
    assert " per step, " in tiny.splitlines()[0] and "of it in kernels" in tiny.splitlines()[0]
    assert tiny.splitlines()[1].split() == ["per", "call", "share", "calls", "kernel"]
    assert "matmul" in tiny and "tanh" in tiny
    assert "swish: not a training step, skipped" in done.stdout
