"""Handwritten digits with a multilayer perceptron: the whole workflow of a real classifier.

Trains a 64-512-10 ReLU network with dropout on the 8x8 digits that ship with
symbackprop, holding out part of the training set for validation, stopping early when
the validation loss stops improving, and keeping the best weights in a checkpoint file.
It then reloads the checkpoint into a fresh model and scores it on the test set: a
classification report (precision, recall, F1 per digit) and the confusion matrix.
Target: at least 97 % test accuracy, with the training itself (after the one-off
compilation) well under 10 s.

Run:  python examples/digits_mlp.py                       (the full run)
      python examples/digits_mlp.py --epochs 5 --hidden 64   (a quick look)
"""

import argparse
import tempfile
import time
from pathlib import Path

import symbackprop as sb


def make_model(hidden: int, dropout: float, seed: int) -> sb.nn.Sequential:
    """64 pixels -> ``hidden`` ReLU units -> 10 digit scores (logits)."""
    return sb.nn.Sequential(
        sb.nn.Dense(64, hidden, activation="relu", init="he_normal", seed=seed),
        # Dropout zeroes a random share of the hidden units at every training step (and is
        # switched off for validation and testing); it keeps the wide layer from memorising.
        sb.nn.Dropout(dropout, seed=seed),
        sb.nn.Dense(hidden, 10, seed=seed + 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="most epochs to train (early stopping ends sooner)")
    parser.add_argument("--hidden", type=int, default=512, help="units in the hidden layer")
    parser.add_argument("--dropout", type=float, default=0.3, help="share of hidden units dropped while training")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=20, help="epochs without a better validation loss")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, dropout and minibatch order")
    parser.add_argument("--checkpoint", type=Path, default=None, help="where to keep the best weights (.npz)")
    args = parser.parse_args()

    # 1,797 digits, split 80/20 into train and test, stratified by digit.
    (X_train, y_train), (X_test, y_test) = sb.data.load_digits(test_fraction=0.2, seed=0)
    print(f"digits: {len(X_train)} for training, {len(X_test)} for testing, {X_train.shape[1]} pixels each")

    model = make_model(args.hidden, args.dropout, args.seed)
    trainer = sb.Trainer(model, loss="softmax_cross_entropy", optimizer=sb.optim.Adam(lr=args.lr))
    print(model)

    # Compiling forward, backward and the Adam update to native code happens once, here
    # (much faster the second time: the machine code is cached on disk).
    started = time.perf_counter()
    trainer.build(X_train, y_train)
    untrained = trainer.evaluate(X_test, y_test)  # compiles the evaluation function as well
    print(f"compiled the training step and the evaluation in {time.perf_counter() - started:.2f} s")
    print(f"before training, the random weights get {untrained['accuracy']:.3f} of the test digits right")

    folder = tempfile.TemporaryDirectory()
    checkpoint = args.checkpoint or Path(folder.name) / "digits_mlp.npz"
    callbacks = [
        # Stop once the validation loss has not improved for `patience` epochs, and put the
        # weights of the best epoch back.
        sb.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience),
        # Save the best weights so far to disk after every improving epoch (atomically).
        sb.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss"),
    ]
    started = time.perf_counter()
    history = trainer.fit(
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation=0.1,  # 10 % of the training digits, never trained on, steer early stopping
        seed=args.seed,
        callbacks=callbacks,
        progress=False,
    )
    training_time = time.perf_counter() - started
    best = history.best("val_loss")
    print(f"\ntrained {len(history)} epochs in {training_time:.2f} s; every 10th epoch and the best:")
    rows = [logs for logs in history.epochs if logs["epoch"] % 10 == 0 or logs is best]
    print(sb.callbacks.History(rows))
    print(f"best epoch {best['epoch']}: validation loss {best['val_loss']:.4f}, accuracy {best['val_accuracy']:.4f}")

    # A fresh model of the same architecture, loaded from the checkpoint: this is how a
    # trained network is used later. Loading checks the architecture and every shape.
    restored = sb.Trainer(make_model(args.hidden, args.dropout, seed=args.seed + 100))
    saved = restored.load(checkpoint)
    print(f"\nreloaded the checkpoint of epoch {saved.extra['epochs']} from {checkpoint.name}")

    test = restored.evaluate(X_test, y_test)
    predicted = restored.predict_classes(X_test)
    print("\nOn the test set:")
    print(sb.metrics.classification_report(y_test, predicted))
    print("\nconfusion matrix (rows: the true digit, columns: the predicted one)")
    print(sb.metrics.format_confusion_matrix(sb.metrics.confusion_matrix(y_test, predicted, num_classes=10)))
    wrong = int((predicted != y_test).sum())
    print(
        f"\ntest accuracy {test['accuracy']:.4f} ({wrong} of {len(y_test)} digits wrong), test loss {test['loss']:.4f}, "
        f"after {training_time:.2f} s of training"
    )
    folder.cleanup()


if __name__ == "__main__":
    main()
