"""Fitting y = a·sin(b·x + c) to noisy data by gradient descent on three scalar parameters.

Not every model is a neural network. Here the model is one formula with three unknowns,
each a scalar ``sb.param``; the sine is a user-defined function (``sb.function`` over a
SymPy expression), so SymPy supplies its derivative. The script prints the exact
gradient of the mean squared error with respect to a, b and c, checks it against central
differences, compiles one gradient-descent step to native code (``sb.compile_step``), and
runs it until the parameters settle, then compares them with the ones that made the data.

Run:  python examples/curve_fit.py               (200 steps)
      python examples/curve_fit.py --epochs 100  (fewer steps)
"""

import argparse

import numpy as np
import sympy

import symbackprop as sb

TRUE = {"a": 2.0, "b": 1.5, "c": 0.5}  # the curve that makes the data
START = {"a": 1.0, "b": 1.0, "c": 0.0}  # the first guess gradient descent starts from


def make_data(points: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``points`` samples of the true curve on [-3, 3] with Gaussian noise of std ``noise``."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, points))
    y = TRUE["a"] * np.sin(TRUE["b"] * x + TRUE["c"]) + rng.normal(0, noise, points)
    return x.astype(np.float32), y.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="gradient-descent steps, each on all the points")
    parser.add_argument("--lr", type=float, default=0.1, help="the step size η")
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.2, help="standard deviation of the noise")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data")
    args = parser.parse_args()

    # The sine as a differentiable elementwise function: its body is a SymPy expression of t.
    t = sympy.Symbol("t")
    sine = sb.function("sine", sympy.sin(t), [t])
    print(f"the model's function: {sine}; its derivative, from SymPy: {sine.derivative()}")

    # The model. x and y hold one number per data point (the batch axis); a, b and c are
    # scalar parameters (shape ()), broadcast against them like numbers.
    x = sb.input("x", (None,))
    y = sb.input("y", (None,))
    a, b, c = (sb.param(name, (), init=np.array(START[name])) for name in "abc")
    prediction = a * sine(b * x + c)
    loss = sb.mse(prediction, y)  # the mean of (prediction − y)² over the points

    print("\nThe loss and its exact gradients, as derived:")
    print(sb.formula(loss))
    print(sb.formula(sb.grad(loss, [a, b, c])))

    X, Y = make_data(args.points, args.noise, args.seed)
    checks = sb.check_grads(loss, [a, b, c], {x: X, y: Y})
    print("\nThe gradients checked against central differences (float64):")
    for check in checks:
        print(f"  {check}")

    # One native call computes the loss, the three gradients and the update w ← w − η·g.
    optimizer = sb.optim.SGD(lr=args.lr)
    print(
        f"\nGradient descent: {optimizer.formula()}, η = {args.lr}, from a, b, c = {START['a']}, {START['b']}, {START['c']}"
    )
    step = sb.compile_step(loss, [x, y], [a, b, c], optimizer)
    every = max(args.epochs // 5, 1)
    reports = {1, args.epochs, *range(every, args.epochs + 1, every)}
    for number in range(1, args.epochs + 1):
        loss_value = step(X, Y)  # the loss before this step's update
        if number in reports:
            print(
                f"  step {number:4d}  loss {loss_value:.5f}   a = {a.value:.4f}  b = {b.value:.4f}  c = {c.value:.4f}"
            )

    final = float(sb.evaluate(loss, {x: X, y: Y}))
    print("\nparameter   true   fitted   difference")
    for name, p in zip("abc", (a, b, c)):
        print(f"    {name}       {TRUE[name]:.3f}   {float(p.value):.4f}   {float(p.value) - TRUE[name]:+.4f}")
    # With the right curve the mean squared error is about the noise variance: the rest is noise.
    print(
        f"\nfitted y = {float(a.value):.3f}·sin({float(b.value):.3f}·x + {float(c.value):.3f}) after {args.epochs} "
        f"steps; residual std {np.sqrt(final):.3f} against noise std {args.noise}"
    )


if __name__ == "__main__":
    main()
