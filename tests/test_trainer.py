"""The fit loop: training, validation, metrics, callbacks, early stopping and checkpoints."""

import numpy as np
import pytest

import symbackprop as sb
from symbackprop import nn
from symbackprop.callbacks import Callback, EarlyStopping, History, ModelCheckpoint
from symbackprop.checkpoint import CheckpointError
from symbackprop.trainer import Trainer


def mlp(hidden=8, seed=0, classes=2, features=2):
    return nn.Sequential(
        nn.Dense(features, hidden, activation="tanh", seed=seed), nn.Dense(hidden, classes, seed=seed + 1)
    )


@pytest.fixture(scope="module")
def spirals():
    return sb.data.two_spirals(n=200, noise=0.05, seed=0)


def test_fit_learns_xor_and_logs_each_epoch():
    X, targets = sb.data.xor()
    y = targets.ravel().astype(np.int64)  # class labels for a two-way softmax
    trainer = Trainer(mlp(), optimizer=sb.optim.Adam(lr=0.05))
    history = trainer.fit(X, y, epochs=150, batch_size=4, progress=False)
    assert len(history) == 150 and trainer.epochs_done == 150
    assert history.keys() == ["epoch", "loss", "accuracy", "time"]
    assert history["loss"][-1] < 0.05 < history["loss"][0]
    assert trainer.evaluate(X, y)["accuracy"] == 1.0
    np.testing.assert_array_equal(trainer.predict_classes(X), y)


def test_evaluate_and_predict_agree_with_the_reference_evaluator(spirals):
    X, y = spirals
    model = mlp(hidden=16)
    trainer = Trainer(model, optimizer=sb.optim.Momentum(lr=0.1), metrics=("accuracy", "f1"))
    trainer.fit(X, y, epochs=3, batch_size=16, progress=False)
    x = sb.input("x", (None, 2))
    labels = sb.input("y", (None,), "int64")
    logits = model(x)
    reference_logits = sb.evaluate(logits, {x: X})
    reference_loss = sb.evaluate(sb.softmax_cross_entropy(logits, labels), {x: X, labels: y})
    np.testing.assert_allclose(trainer.predict(X), reference_logits, rtol=1e-5, atol=1e-6)
    scores = trainer.evaluate(X, y)
    assert scores["loss"] == pytest.approx(float(reference_loss), rel=1e-5)
    assert scores["accuracy"] == pytest.approx(sb.metrics.accuracy(y, reference_logits))
    assert set(scores) == {"loss", "accuracy", "f1"}


def test_same_seed_same_training_different_seed_different_order(spirals):
    X, y = spirals

    def train(seed):
        trainer = Trainer(mlp(seed=3), optimizer=sb.optim.SGD(lr=0.1))
        trainer.fit(X, y, epochs=2, batch_size=8, seed=seed, progress=False)
        return trainer.get_weights()

    first, again, other = train(1), train(1), train(2)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[name], other[name]) for name in first)


def test_validation_fraction_and_pair(spirals):
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.Adam(lr=0.01), metrics=("accuracy", "precision", "recall"))
    history = trainer.fit(X, y, epochs=2, validation=0.25, progress=False)
    assert history.keys() == ["epoch", "loss", "val_loss", "val_accuracy", "val_precision", "val_recall", "time"]
    history = trainer.fit(X[:150], y[:150], epochs=1, validation=(X[150:], y[150:]), progress=False)
    assert history["val_loss"][0] == pytest.approx(trainer.evaluate(X[150:], y[150:])["loss"])
    assert [logs["epoch"] for logs in trainer.history.epochs] == [1, 2, 3]


def test_regression_with_float_targets():
    X, y = sb.data.noisy_sine(n=128, noise=0.05, seed=0)
    model = nn.Sequential(nn.Dense(1, 16, activation="tanh", seed=0), nn.Dense(16, 1, seed=1))
    trainer = Trainer(model, loss="mse", optimizer=sb.optim.Adam(lr=0.02), metrics=())
    history = trainer.fit(X, y, epochs=100, batch_size=16, progress=False)
    assert history["loss"][-1] < 0.1 * history["loss"][0]
    assert trainer.predict(X).shape == (128, 1)


def test_custom_loss_function_with_a_penalty(spirals):
    X, y = spirals
    model = mlp()
    params = list(model.parameters().values())

    def penalised(logits, labels):
        return sb.softmax_cross_entropy(logits, labels) + 1e-3 * sum((w * w).sum() for w in params)

    trainer = Trainer(model, loss=penalised, optimizer=sb.optim.SGD(lr=0.1))
    assert trainer.loss_name == "penalised"
    history = trainer.fit(X, y, epochs=2, progress=False)
    assert np.isfinite(history["loss"]).all()


def test_callbacks_hear_every_epoch_and_can_stop(spirals):
    X, y = spirals
    seen = []

    class StopAtTwo(Callback):
        def on_fit_begin(self, trainer):
            seen.append("begin")

        def on_epoch_end(self, trainer, epoch, logs):
            trainer.stop_training = epoch == 2

        def on_fit_end(self, trainer, history):
            seen.append(f"end after {len(history)}")

    trainer = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1))
    history = trainer.fit(
        X, y, epochs=10, callbacks=[StopAtTwo(), lambda epoch, logs: seen.append(epoch)], progress=False
    )
    assert len(history) == 2
    assert seen == ["begin", 1, 2, "end after 2"]


def test_early_stopping_restores_the_best_epochs_weights(spirals):
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1))
    weights = []
    # The loss falls every epoch, so in "max" mode only the first epoch is ever "best".
    stop = EarlyStopping(monitor="loss", mode="max", patience=2)
    history = trainer.fit(
        X, y, epochs=10, callbacks=[lambda e, logs: weights.append(trainer.get_weights()), stop], progress=False
    )
    assert len(history) == 3 and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(value, weights[0][name])


def test_early_stopping_refuses_an_unlogged_quantity(spirals):
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1))
    with pytest.raises(KeyError, match="monitors 'val_loss', which the fit does not log"):
        trainer.fit(X, y, epochs=1, callbacks=[EarlyStopping()], progress=False)


def test_checkpoint_resume_continues_exactly(tmp_path, spirals):
    X, y = spirals
    momentum = sb.optim.Momentum(lr=0.05, momentum=0.9)
    trainer = Trainer(mlp(seed=5), optimizer=momentum)
    trainer.fit(X, y, epochs=2, seed=0, progress=False)
    trainer.save(tmp_path / "run.npz")
    trainer.fit(X, y, epochs=2, seed=1, progress=False)

    resumed = Trainer(mlp(seed=9), optimizer=sb.optim.Momentum(lr=0.05, momentum=0.9))
    resumed.load(tmp_path / "run.npz")  # before the step is compiled: the state waits for it
    assert resumed.epochs_done == 2
    resumed.fit(X, y, epochs=2, seed=1, progress=False)
    assert resumed.step.steps == trainer.step.steps
    for name, value in trainer.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[name], value)


def test_checkpoint_refused_for_another_architecture_or_optimizer(tmp_path, spirals):
    X, y = spirals
    trainer = Trainer(mlp(hidden=8), optimizer=sb.optim.Adam(lr=0.01))
    trainer.fit(X, y, epochs=1, progress=False)
    path = trainer.save(tmp_path / "adam.npz")
    with pytest.raises(CheckpointError, match="different model"):
        Trainer(mlp(hidden=9), optimizer=sb.optim.Adam(lr=0.01)).load(path)
    other = Trainer(mlp(hidden=8), optimizer=sb.optim.SGD(lr=0.1))
    other.fit(X, y, epochs=1, progress=False)
    before = other.get_weights()
    with pytest.raises(CheckpointError, match=r"holds Adam's optimizer state, this trainer uses SGD"):
        other.load(path)
    for name, value in other.get_weights().items():  # a refused checkpoint changes nothing
        np.testing.assert_array_equal(value, before[name])
    sgd_path = other.save(tmp_path / "sgd.npz")
    with pytest.raises(CheckpointError, match="holds SGD's optimizer state, this trainer uses Adam"):
        Trainer(mlp(hidden=8), optimizer=sb.optim.Adam(lr=0.01)).load(sgd_path)
    other.load(path, optimizer_state=False)
    np.testing.assert_array_equal(other.get_weights()["0.W"], trainer.get_weights()["0.W"])


def test_model_checkpoint_keeps_the_best_epoch(tmp_path, spirals):
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.Adam(lr=0.02))
    saver = ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss")
    history = trainer.fit(X, y, epochs=4, validation=0.25, callbacks=[saver], progress=False)
    best = history.best("val_loss")
    loaded = sb.checkpoint.load_checkpoint(tmp_path / "best.npz")
    assert loaded.extra["epochs"] == best["epoch"] == loaded.extra["logs"]["epoch"]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda t, X, y: t.fit(X, y[:-1], progress=False), sb.GraphError, "X has 200 examples but y has 199"),
        (lambda t, X, y: t.fit(X[:, 0], y, progress=False), sb.GraphError, r"at least 2-D"),
        (lambda t, X, y: t.fit(X, y, epochs=-1), ValueError, "epochs must be an int >= 0"),
        (lambda t, X, y: t.fit(X, y, batch_size=0), ValueError, "batch_size must be an int >= 1"),
        (lambda t, X, y: t.fit(X, y, validation=1.5), ValueError, "between 0 and 1"),
        (lambda t, X, y: t.fit(X, y, validation="some"), TypeError, "a fraction or an"),
        (lambda t, X, y: t.predict(X), sb.GraphError, "call fit or build first"),
    ],
)
def test_bad_calls_are_clear_errors(spirals, call, error, message):
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1))
    with pytest.raises(error, match=message):
        call(trainer, X, y)


def test_bad_construction_and_data_of_another_shape(spirals):
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        Trainer(mlp(), loss="hinge")
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        Trainer(mlp(), metrics=("auc",))
    with pytest.raises(TypeError, match="model must be a symbackprop.nn module"):
        Trainer(lambda x: x)
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1))
    trainer.fit(X, y, epochs=1, progress=False)
    with pytest.raises(sb.GraphError, match=r"built for examples \(2,\)"):
        trainer.evaluate(np.zeros((3, 5)), np.zeros(3, dtype=np.int64))


def test_a_diverging_loss_stops_with_advice(spirals):
    X, y = spirals
    trainer = Trainer(mlp(), loss="mse", optimizer=sb.optim.SGD(lr=1e6), metrics=())
    targets = np.full((len(X), 2), 1e3, dtype=np.float32)
    with pytest.raises(FloatingPointError, match="try a smaller learning rate"):
        trainer.fit(X, targets, epochs=20, progress=False)


def test_history_printing_and_lookup():
    history = History([{"epoch": 1, "loss": 1.0, "time": 0.1}, {"epoch": 2, "loss": 0.5, "time": 0.1}])
    assert history.best("loss")["epoch"] == 2
    assert history.to_dict() == {"epoch": [1, 2], "loss": [1.0, 0.5], "time": [0.1, 0.1]}
    assert "time" not in str(history)
    with pytest.raises(KeyError, match="no epoch logged 'val_loss'"):
        history["val_loss"]


def test_an_embedding_model_trains_on_integer_inputs():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 20, size=(64, 5))
    labels = (tokens[:, 0] < 10).astype(np.int64)
    model = nn.Sequential(nn.Embedding(20, 4, seed=0), nn.Flatten(), nn.Dense(20, 2, seed=1))
    trainer = Trainer(model, optimizer=sb.optim.Adam(lr=0.05))
    history = trainer.fit(tokens, labels, epochs=30, batch_size=16, progress=False)
    assert history["accuracy"][-1] > 0.9


def test_targets_follow_the_loss_and_default_metrics_follow_the_loss(spirals):
    X, y = spirals
    one_logit = nn.Sequential(nn.Dense(2, 8, activation="tanh", seed=0), nn.Dense(8, 1, seed=1))
    trainer = Trainer(one_logit, loss="binary_cross_entropy", optimizer=sb.optim.Adam(lr=0.02))
    assert trainer.metrics == {}  # accuracy of one logit would be meaningless
    history = trainer.fit(X, y[:, None].astype(bool), epochs=3, progress=False)  # bool targets become floats
    assert history.keys() == ["epoch", "loss", "time"]
    regression = Trainer(mlp(classes=1), loss="mse", optimizer=sb.optim.SGD(lr=0.05))
    regression.fit(X, y[:, None], epochs=1, progress=False)  # int regression targets become floats
    classifier = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1), metrics="accuracy")
    classifier.fit(X, y.astype(np.float64), epochs=1, progress=False)  # whole-number floats are labels
    with pytest.raises(sb.GraphError, match="takes class labels 0, 1, 2, ...; y holds fractions"):
        Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1)).fit(X, y + 0.5, epochs=1, progress=False)


def test_fit_keeps_the_models_mode_and_accepts_numpy_counts(spirals):
    X, y = spirals
    model = mlp().eval()
    trainer = Trainer(model, optimizer=sb.optim.SGD(lr=0.1))
    trainer.fit(X, y, epochs=np.int64(1), batch_size=np.int64(8), validation=np.float32(0.25), progress=False)
    assert not model.training and not any(m.training for m in model.modules())


def test_non_finite_inputs_are_refused_and_empty_inputs_handled(spirals):
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(sb.GraphError, match="X holds NaN or infinite values"):
        trainer.fit(bad, y, epochs=1, progress=False)
    trainer.fit(X, y, epochs=1, progress=False)
    assert trainer.predict(X[:0]).shape == (0, 2)
    with pytest.raises(sb.GraphError, match="X has no examples"):
        trainer.evaluate(X[:0], y[:0])


def test_a_failing_epoch_keeps_the_history_and_lets_callbacks_finish(spirals):
    X, y = spirals
    trainer = Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1))
    stop = EarlyStopping(monitor="loss", patience=5)

    def poison(epoch, logs):
        if epoch == 2:
            trainer.params["0.W"].value[...] = np.inf

    with pytest.raises(FloatingPointError, match="the training loss became nan in epoch 3"):
        trainer.fit(X, y, epochs=5, callbacks=[stop, poison], progress=False)
    assert len(trainer.history) == 2
    assert np.isfinite(trainer.get_weights()["0.W"]).all()  # early stopping put back the best epoch


def test_non_finite_values_never_count_as_the_best():
    history = History([{"epoch": 1, "val_loss": float("nan")}, {"epoch": 2, "val_loss": 0.5}])
    assert history.best("val_loss")["epoch"] == 2
    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best=False)
    stop.on_fit_begin(None)

    class Owner:
        stop_training = False

    owner = Owner()
    for epoch, value in enumerate([float("nan"), 1.0, 0.5, 0.4], start=1):
        stop.on_epoch_end(owner, epoch, {"val_loss": value})
    assert stop.best == 0.4 and not owner.stop_training


def test_a_profiled_trainer_times_each_kernel_of_its_step(spirals):
    X, y = spirals
    plain, timed = (
        Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1)),
        Trainer(mlp(), optimizer=sb.optim.SGD(lr=0.1), profile=True),
    )
    for trainer in (plain, timed):
        trainer.fit(X, y, epochs=2, batch_size=50, progress=False)
    assert plain.step.profile is None
    assert {row.calls for row in timed.step.profile.rows} == {2 * -(-len(X) // 50)}
    assert plain.history["loss"] == timed.history["loss"]  # timing changes no result
