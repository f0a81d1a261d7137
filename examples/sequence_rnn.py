"""A recurrent network that has to remember: the "adding problem" with an LSTM or a GRU.

Each example is a sequence of steps; a step carries a number between 0 and 1 and a flag,
and exactly two steps are flagged. The target is the sum of the two flagged numbers. To
get it right the network must notice a flagged number when it passes, keep it in its
state while the unflagged ones go by, and add the second one: exactly what the gates of
an LSTM or a GRU are for. Guessing the average sum gives a mean squared error near 0.17.

``sb.nn.LSTM`` and ``sb.nn.GRU`` are unrolled: the graph holds one copy of the cell per
time step, all sharing the same weights, so ``sb.grad`` performs backpropagation through
time with no special machinery, and the whole unrolled step is compiled to native code.
The script prints the training curve, the test error, the share of test sums predicted
to within 0.05, and a few sequences with their predictions.

Run:  python examples/sequence_rnn.py                           (LSTM over 10 steps)
      python examples/sequence_rnn.py --cell GRU
      python examples/sequence_rnn.py --epochs 3 --length 4 --hidden 8   (a quick look)
"""

import argparse
import time

import numpy as np

import symbackprop as sb
from symbackprop import nn

TOLERANCE = 0.05  # a predicted sum this close to the true one counts as right


def adding_problem(examples: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences ``(examples, length, 2)`` of (number, flag) steps and their targets ``(examples, 1)``."""
    rng = np.random.default_rng(seed)
    numbers = rng.uniform(0, 1, size=(examples, length))
    flags = np.zeros((examples, length))
    # Two distinct flagged positions per sequence: the first two of a random order of the steps.
    flagged = np.argsort(rng.random((examples, length)), axis=1)[:, :2]
    np.put_along_axis(flags, flagged, 1.0, axis=1)
    X = np.stack([numbers, flags], axis=2).astype(np.float32)
    y = (numbers * flags).sum(axis=1, keepdims=True).astype(np.float32)
    return X, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=["LSTM", "GRU"], default="LSTM", help="the recurrent layer")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--length", type=int, default=10, help="steps per sequence")
    parser.add_argument("--hidden", type=int, default=16, help="size of the recurrent state")
    parser.add_argument("--examples", type=int, default=4000, help="sequences in all; a quarter are kept for testing")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the minibatch order")
    args = parser.parse_args()

    X, y = adding_problem(args.examples, args.length, args.seed)
    split = args.examples * 3 // 4
    (X_train, y_train), (X_test, y_test) = (X[:split], y[:split]), (X[split:], y[split:])
    print(f"{len(X_train)} training and {len(X_test)} test sequences of {args.length} (number, flag) steps")
    print("one of them:", " ".join(f"{v:.2f}{'*' if f else ''}" for v, f in X_train[0]), f"-> {y_train[0, 0]:.2f}")
    baseline = float(np.mean((y_test - y_train.mean()) ** 2))
    print(f"always guessing the mean training sum {y_train.mean():.2f} gives a test MSE of {baseline:.4f}")

    # The recurrent layer reads the sequence and hands its last state to a dense layer that
    # outputs the sum: (n, length, 2) -> (n, hidden) -> (n, 1).
    cell = getattr(nn, args.cell)
    model = nn.Sequential(cell(2, args.hidden, seed=args.seed), nn.Dense(args.hidden, 1, seed=args.seed + 1))
    print(f"\n{model}")
    sequences = sb.input("x", (None, args.length, 2))
    unrolled = sb.to_text(sb.mse(model(sequences), sb.input("y", (None, 1)))).count("\n")
    print(f"unrolled over {args.length} steps, the loss is a graph of {unrolled} nodes sharing one set of weights")

    trainer = sb.Trainer(model, loss="mse", optimizer=sb.optim.Adam(lr=args.lr), metrics=())
    started = time.perf_counter()
    trainer.build(X_train, y_train)
    trainer.evaluate(X_test[:1], y_test[:1])  # compiles the evaluation function too, outside the timed training
    print(f"compiled the training step and the evaluation in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    history = trainer.fit(
        X_train, y_train, epochs=args.epochs, batch_size=32, validation=(X_test, y_test), seed=args.seed, progress=False
    )
    training_time = time.perf_counter() - started
    every = max(args.epochs // 6, 1)
    print(f"trained {args.epochs} epochs in {training_time:.2f} s:")
    print(
        sb.callbacks.History(
            [logs for logs in history.epochs if logs["epoch"] in (1, args.epochs) or logs["epoch"] % every == 0]
        )
    )

    predicted = trainer.predict(X_test)
    error = np.abs(predicted - y_test).ravel()
    mse = float(np.mean(error**2))
    within = float(np.mean(error < TOLERANCE))
    print("\nsome test sequences (* marks the flagged numbers):")
    for i in range(3):
        steps = " ".join(f"{v:.2f}{'*' if f else ' '}" for v, f in X_test[i])
        print(f"  {steps}  sum {y_test[i, 0]:.3f}, predicted {predicted[i, 0]:.3f}")
    print(
        f"\n{args.cell}: test MSE {mse:.5f} (guessing the mean: {baseline:.4f}); "
        f"{100 * within:.1f} % of test sums within {TOLERANCE}; {training_time:.2f} s of training"
    )


if __name__ == "__main__":
    main()
