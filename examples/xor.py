"""XOR, the problem a single layer cannot solve, learned by a two-layer network.

Shows the layers of ``sb.nn``, the gradient formulas symbackprop derives for them, and
``sb.Trainer``, which compiles the training step to native code and runs the fit loop.
The output is the derivation, the loss as training goes, and the learned truth table.

Run:  python examples/xor.py                 (the full run: 400 epochs)
      python examples/xor.py --epochs 150    (shorter)
"""

import argparse

import numpy as np

import symbackprop as sb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=400, help="passes over the four examples")
    parser.add_argument("--hidden", type=int, default=4, help="tanh units in the hidden layer")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    args = parser.parse_args()

    # The four corners of the unit square; the target is 1 where exactly one input is 1.
    X, y = sb.data.xor()

    # 2 inputs -> tanh hidden layer -> one logit. The loss applies the sigmoid itself
    # (binary cross-entropy from the logit, stable for any value), so the last layer has none.
    model = sb.nn.Sequential(
        sb.nn.Dense(2, args.hidden, activation="tanh", seed=args.seed),
        sb.nn.Dense(args.hidden, 1, seed=args.seed + 1),
    )
    print(model)

    # The model is an ordinary graph: call it on an input tensor, and sb.grad and sb.formula
    # show what the trainer is about to compile. Layers are numbered in the formula as in
    # the model: W1, b1 for the hidden layer, W2, b2 for the output.
    x = sb.input("x", (None, 2))
    target = sb.input("y", (None, 1))
    loss = sb.binary_cross_entropy(model(x), target)
    params = list(model.parameters().values())
    print("\nThe gradients, as derived:")
    print(sb.formula(sb.grad(loss, params)))

    optimizer = sb.optim.Adam(lr=args.lr)
    print("\nThe optimizer's update rules:")
    print(optimizer.formula())

    # No metrics: accuracy in the Trainer reads class scores, and a single logit is not that;
    # the truth table below is the real test.
    trainer = sb.Trainer(model, loss="binary_cross_entropy", optimizer=optimizer, metrics=())
    history = trainer.fit(X, y, epochs=args.epochs, batch_size=4, seed=args.seed, progress=False)
    print(f"\nTraining ({args.epochs} epochs of one full batch):")
    for epoch in sorted({1, *range(0, args.epochs + 1, max(args.epochs // 4, 1))} - {0}):
        print(f"  epoch {epoch:4d}  loss {history['loss'][epoch - 1]:.4f}")

    probability = 1 / (1 + np.exp(-trainer.predict(X).ravel()))  # sigmoid of the logit
    predicted = (probability > 0.5).astype(int)
    print("\nThe learned truth table:")
    print("  x1  x2  target  P(y=1)  output")
    for (a, b), want, p, out in zip(X.astype(int), y.ravel().astype(int), probability, predicted):
        print(f"  {a:2d}  {b:2d}  {want:6d}  {p:6.3f}  {out:6d}")
    right = int((predicted == y.ravel()).sum())
    verdict = "learned XOR" if right == 4 else "did not learn XOR yet (try more epochs)"
    print(f"\n{right} of 4 rows right after {args.epochs} epochs, final loss {history['loss'][-1]:.4f}: {verdict}.")


if __name__ == "__main__":
    main()
