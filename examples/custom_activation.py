"""Your own activation function, written in SymPy, differentiated by SymPy, compiled to native code.

The activation here is the inverse square root unit, isru(t) = t/√(1 + t²): an S-shaped
curve like tanh (also odd, also slope 1 at 0, also bounded by ±1) built from a square root
instead of exponentials, with tails that flatten more slowly. ``sb.function`` turns the
SymPy expression into an elementwise function on tensors; the script prints the
derivative SymPy found, and the much shorter form ``sympy.simplify`` reduces it to, then
trains the same network on the two-spirals problem twice, once with isru and once with
tanh, and compares them.

Run:  python examples/custom_activation.py               (200 epochs for each)
      python examples/custom_activation.py --epochs 40   (shorter)
"""

import argparse
import time

import numpy as np
import sympy

import symbackprop as sb


def make_model(activation, hidden: int, seed: int) -> sb.nn.Sequential:
    """2 coordinates -> two hidden layers with the given activation -> 2 class scores."""
    return sb.nn.Sequential(
        sb.nn.Dense(2, hidden, activation=activation, init="he_normal", seed=seed),
        sb.nn.Dense(hidden, hidden, activation=activation, init="he_normal", seed=seed + 1),
        sb.nn.Dense(hidden, 2, seed=seed + 2),
    )


def show_derivatives(isru) -> None:
    """The derivative SymPy found, its simplified form, and the slopes of isru and tanh."""
    derivative = isru.derivative()  # found by sympy.diff when the function was defined
    print("the activation:          ", isru)
    print("its derivative, by SymPy:", derivative)
    print("simplified:              ", sympy.simplify(derivative))

    # The derivative is what backpropagation multiplies by. The evaluator computes both
    # activations' slopes from their gradient graphs, on a tensor of sample points.
    points = sb.input("t", (5,))
    samples = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
    print("\n  t      " + "".join(f"{v:9.1f}" for v in samples))
    for name, fn in (("isru", isru), ("tanh", sb.tanh)):
        slopes = sb.evaluate(sb.grad(fn(points).sum(), points), {points: samples})
        print(f"  {name}'(t)" + "".join(f"{v:9.4f}" for v in slopes))


def show_network_gradients(isru) -> None:
    """A layer takes the function as its activation; the derivation uses its derivative."""
    x = sb.input("x", (None, 2))
    labels = sb.input("y", (None,), dtype="int64")
    model = make_model(isru, 4, seed=0)
    loss = sb.softmax_cross_entropy(model(x), labels)
    print("\nThe gradients of a network with isru layers:")
    print(sb.formula(sb.grad(loss, list(model.parameters().values()))))


def train(activation, data, args) -> dict:
    """Train the network with ``activation``: its loss curve, test scores and timings."""
    (X_train, y_train), (X_test, y_test) = data
    trainer = sb.Trainer(make_model(activation, args.hidden, args.seed), optimizer=sb.optim.Adam(lr=args.lr))
    started = time.perf_counter()
    trainer.build(X_train, y_train)  # compiles forward, backward and update, the derivative inlined
    compiled = time.perf_counter() - started
    started = time.perf_counter()
    history = trainer.fit(X_train, y_train, epochs=args.epochs, batch_size=32, seed=args.seed, progress=False)
    trained = time.perf_counter() - started
    return {"losses": history["loss"], "test": trainer.evaluate(X_test, y_test), "compile": compiled, "train": trained}


def print_comparison(results: dict, epochs: int) -> None:
    report_at = sorted({max(epochs // 8, 1), max(epochs // 4, 1), max(epochs // 2, 1), epochs})
    print("\ntraining loss after epoch " + "".join(f"{e:>9d}" for e in report_at))
    for name, result in results.items():
        print(f"  {name:<24}" + "".join(f"{result['losses'][e - 1]:9.4f}" for e in report_at))
    print("\n          test accuracy  test loss  compile (s)  train (s)")
    for name, result in results.items():
        test = result["test"]
        print(
            f"  {name:<8}{test['accuracy']:13.3f}{test['loss']:11.4f}{result['compile']:13.2f}{result['train']:11.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs of training for each activation")
    parser.add_argument("--hidden", type=int, default=32, help="units in each hidden layer")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the minibatch order")
    args = parser.parse_args()

    # The activation: a SymPy expression of one symbol, made an elementwise function on tensors.
    t = sympy.Symbol("t")
    isru = sb.function("isru", t / sympy.sqrt(1 + t**2), [t])
    show_derivatives(isru)
    show_network_gradients(isru)

    X, y = sb.data.two_spirals(n=400, noise=0.05, seed=0)
    data = sb.data.train_test_split(X, y, test_fraction=0.25, seed=0)
    print(
        f"\nTwo spirals: {len(data.train[0])} points to train on, {len(data.test[0])} to test; {args.epochs} epochs each."
    )
    results = {"isru": train(isru, data, args), "tanh": train("tanh", data, args)}
    print_comparison(results, args.epochs)
    isru_test, tanh_test = results["isru"]["test"], results["tanh"]["test"]
    print(
        f"\nisru reached test accuracy {isru_test['accuracy']:.3f} (loss {isru_test['loss']:.4f}), "
        f"tanh {tanh_test['accuracy']:.3f} (loss {tanh_test['loss']:.4f}), after {args.epochs} epochs each."
    )


if __name__ == "__main__":
    main()
