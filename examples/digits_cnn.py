"""A small convolutional network on the 8x8 handwritten digits, read as images.

The digits come as (n, 8, 8, 1) images (NHWC: height, width, one grey channel). A 3x3
convolution with ReLU finds local strokes, 2x2 max pooling halves the image, and two
dense layers classify; dropout and early stopping on a validation split keep it from
memorising the 1,438 training digits. The script prints each layer's output shape, the
training curve, the test accuracy and the training time, and draws a few of the digits
it got wrong. Target: at least 98 % test accuracy.

Run:  python examples/digits_cnn.py                                 (the full run)
      python examples/digits_cnn.py --epochs 3 --channels 8 --hidden 32   (a quick look)
"""

import argparse
import time

import numpy as np

import symbackprop as sb
from symbackprop import nn

SHADES = " .:-=+*#%@"  # pixel intensity 0..1 as characters, light to dark


def make_model(channels: int, hidden: int, dropout: float, seed: int) -> nn.Sequential:
    """conv 3x3 (same size) + ReLU -> max pool 2x2 -> flatten -> dropout -> dense + ReLU -> 10 scores."""
    return nn.Sequential(
        nn.Conv2D(1, channels, 3, padding="same", activation="relu", seed=seed),
        nn.MaxPool2D(2),
        nn.Flatten(),
        nn.Dropout(dropout, seed=seed),
        nn.Dense(4 * 4 * channels, hidden, activation="relu", seed=seed + 1),
        nn.Dense(hidden, 10, seed=seed + 2),
    )


def draw(images: list[np.ndarray], captions: list[str]) -> str:
    """8x8 images side by side as text, each under its caption."""
    width = max(16, *(len(c) for c in captions))
    rows = ["   ".join(c.ljust(width) for c in captions).rstrip()]
    for r in range(8):
        cells = [
            "".join(2 * SHADES[min(int(v * len(SHADES)), len(SHADES) - 1)] for v in image[r, :, 0]) for image in images
        ]
        rows.append("   ".join(cell.ljust(width) for cell in cells).rstrip())
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="most epochs to train (early stopping ends sooner)")
    parser.add_argument("--channels", type=int, default=32, help="feature maps of the convolution")
    parser.add_argument("--hidden", type=int, default=128, help="units of the hidden dense layer")
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=0.002, help="Adam's learning rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=15, help="epochs without a better validation loss")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, dropout and minibatch order")
    args = parser.parse_args()

    (X_train, y_train), (X_test, y_test) = sb.data.load_digits(shape="image", test_fraction=0.2, seed=0)
    print(f"digits as images: train {X_train.shape}, test {X_test.shape}")

    model = make_model(args.channels, args.hidden, args.dropout, args.seed)
    print(model)

    # Each layer builds graph nodes with static shapes, so the shapes are known before any
    # data flows: follow a symbolic batch of images (n) through the layers.
    flowing = sb.input("images", (None, 8, 8, 1))
    print("\nshapes through the layers (n is the batch):")
    for layer in model:
        flowing = layer(flowing)
        print(f"  {type(layer).__name__:<10} -> {tuple('n' if d is None else d for d in flowing.shape)}")
    sizes = {name: p.value.size for name, p in model.parameters().items()}
    print(f"{sum(sizes.values())} parameters: " + ", ".join(f"{name} {size}" for name, size in sizes.items()))

    trainer = sb.Trainer(model, loss="softmax_cross_entropy", optimizer=sb.optim.Adam(lr=args.lr))
    started = time.perf_counter()
    trainer.build(X_train, y_train)  # forward, backward and Adam compiled to native code once
    untrained = trainer.evaluate(X_test, y_test)  # compiles the evaluation function as well
    print(f"\ncompiled the training step and the evaluation in {time.perf_counter() - started:.2f} s")
    print(f"before training, the random weights get {untrained['accuracy']:.3f} of the test digits right")

    stop = sb.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience)  # restores the best epoch
    started = time.perf_counter()
    history = trainer.fit(
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=0.1,
        seed=args.seed,
        callbacks=[stop],
        progress=False,
    )
    training_time = time.perf_counter() - started
    best = history.best("val_loss")
    every = max(len(history) // 8, 1)
    print(
        f"trained {len(history)} epochs in {training_time:.2f} s ({1000 * training_time / len(history):.0f} ms each):"
    )
    print(sb.callbacks.History([logs for logs in history.epochs if logs["epoch"] % every == 0 or logs is best]))
    print(f"kept the weights of epoch {best['epoch']} (validation loss {best['val_loss']:.4f})")

    test = trainer.evaluate(X_test, y_test)
    predicted = trainer.predict_classes(X_test)
    wrong = np.flatnonzero(predicted != y_test)
    print(f"\n{len(wrong)} of {len(y_test)} test digits wrong; the first few (true -> predicted):")
    shown = wrong[:4]
    if len(shown):
        print(draw([X_test[i] for i in shown], [f"{y_test[i]} -> {predicted[i]}" for i in shown]))
    print(
        f"\ntest accuracy {test['accuracy']:.4f}, test loss {test['loss']:.4f}, "
        f"after {training_time:.2f} s of training ({len(history)} epochs)"
    )


if __name__ == "__main__":
    main()
