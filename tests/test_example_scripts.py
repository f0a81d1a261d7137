"""Each script in examples/ runs in a short configuration and prints the numbers it should.

The scripts run as a user runs them, in a fresh interpreter, so imports, argument parsing
and printing are covered too. The short configurations keep each run to a few seconds;
the digits MLP runs in its default configuration and must meet its 97 % target.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    """The standard output of ``python examples/<name> <args>``; fails the test on an error."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent
    )
    assert done.returncode == 0, f"{name} {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def number_after(pattern: str, text: str) -> float:
    """The number captured by ``pattern``'s one group, at its first match in ``text``."""
    match = re.search(pattern, text)
    assert match, f"nothing matches {pattern!r} in:\n{text}"
    return float(match.group(1))


def rounded(pattern: str, text: str, decimals: int) -> str:
    """The number captured by ``pattern``, written with ``decimals`` decimals."""
    return f"{number_after(pattern, text):.{decimals}f}"


def test_textbook_backprop_reproduces_the_worked_example():
    out = run_example("textbook_backprop.py", "--epochs", "2")
    # The values of the well-known worked example, to the digits it gives them.
    assert rounded(r"E +L = .*= +(\d\.\d+)", out, 9) == "0.298371109"
    assert rounded(r"w5 ← .* = (\d\.\d+)", out, 8) == "0.35891648"
    assert rounded(r"w1 ← .* = (\d\.\d+)", out, 9) == "0.149780716"
    # The other intermediate values of the example.
    assert rounded(r"out_h1 .*= +(\d\.\d+)", out, 9) == "0.593269992"
    assert rounded(r"out_o1 .*= +(\d\.\d+)", out, 9) == "0.751365070"
    assert rounded(r"δ_o1 .*= +(\d\.\d+)", out, 9) == "0.138498562"
    assert rounded(r"∂E/∂w5 = [^=]+= [^=]+= +(\d\.\d+)", out, 9) == "0.082167041"
    assert rounded(r"w8 ← .* = (\d\.\d+)", out, 9) == "0.561370121"
    # The symbolic formulas are printed beside the numbers.
    assert "δ1_1 = h1_1·(1 − h1_1)·(W2_11·δ2_1 + W2_12·δ2_2)" in out
    assert "∂L/∂W2_11 = h1_1·δ2_1" in out
    # The compiled repetition starts from the same error and takes the same second step.
    assert number_after(r"step +1: E = (\d\.\d+)", out) == pytest.approx(0.298371109, abs=1e-9)
    assert number_after(r"step +2: E = (\d\.\d+)", out) == pytest.approx(0.2910277737, abs=1e-9)


def test_xor_learns_the_truth_table():
    out = run_example("xor.py", "--epochs", "150")
    assert "δ1 = δ2·W2ᵀ ⊙ (1 − h1²)" in out
    rows = re.findall(r"^\s+([01])\s+([01])\s+([01])\s+(\d\.\d+)\s+([01])$", out, re.M)
    assert len(rows) == 4, out
    for a, b, target, probability, output in rows:
        assert int(target) == int(a) ^ int(b)
        assert output == target
        assert (float(probability) > 0.5) == (target == "1")
    assert "4 of 4 rows right" in out


def test_digits_mlp_meets_its_target_in_the_default_configuration():
    out = run_example("digits_mlp.py")
    assert number_after(r"test accuracy (\d\.\d+)", out) >= 0.97
    assert number_after(r"after (\d+\.\d+) s of training", out) < 10
    assert "reloaded the checkpoint of epoch" in out
    assert "macro avg" in out and "true \\ predicted" in out


def test_digits_cnn_learns_in_a_short_run():
    out = run_example("digits_cnn.py", "--epochs", "3", "--channels", "8", "--hidden", "32")
    assert "Conv2D     -> ('n', 8, 8, 8)" in out
    assert "MaxPool2D  -> ('n', 4, 4, 8)" in out
    assert number_after(r"test accuracy (\d\.\d+)", out) > 0.8


def test_custom_activation_derives_and_trains():
    out = run_example("custom_activation.py", "--epochs", "40")
    assert "its derivative, by SymPy: -t**2/(t**2 + 1)**(3/2) + 1/sqrt(t**2 + 1)" in out
    assert "simplified:               (t**2 + 1)**(-3/2)" in out
    assert "δ1 = δ2·W2ᵀ/(z1² + 1)**(3/2)" in out
    # isru'(t) = (1 + t²)^(-3/2): at t = 1 that is 2^(-3/2).
    assert number_after(r"isru'\(t\) +\S+ +\S+ +(\S+)", out) == pytest.approx(2**-1.5, abs=1e-4)
    assert number_after(r"isru reached test accuracy (\d\.\d+)", out) > 0.75
    assert number_after(r"tanh (\d\.\d+) \(loss", out) > 0.75


def test_curve_fit_recovers_the_parameters():
    out = run_example("curve_fit.py", "--epochs", "100")
    assert "∂L/∂b = Σ₀(2·a ⊙ x ⊙ (a ⊙ sin(c + b ⊙ x) − y) ⊙ cos(c + b ⊙ x)/n)" in out
    a = number_after(r"fitted y = (-?\d\.\d+)·sin", out)
    b = number_after(r"·sin\((-?\d\.\d+)·x", out)
    c = number_after(r"·x \+ (-?\d\.\d+)\)", out)
    assert a == pytest.approx(2.0, abs=0.05)
    assert b == pytest.approx(1.5, abs=0.02)
    assert c == pytest.approx(0.5, abs=0.05)


def test_sequence_rnn_beats_guessing_the_mean():
    out = run_example("sequence_rnn.py", "--epochs", "3", "--length", "4", "--hidden", "8")
    mse = number_after(r"test MSE (\d\.\d+)", out)
    baseline = number_after(r"guessing the mean: (\d\.\d+)", out)
    assert baseline > 0.1
    assert mse < baseline / 4
