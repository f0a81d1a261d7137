"""Conv2D, pooling and a small CNN: values against PyTorch, gradients against central
differences, compiled code against the reference evaluator, a training step, and errors."""

import numpy as np
import pytest

import symbackprop as sb

nn = sb.nn
RNG = np.random.default_rng(0)


def _nchw(torch, images):
    return torch.tensor(images).permute(0, 3, 1, 2)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize(
    "kernel, stride, padding",
    [((3, 3), 1, 0), ((3, 2), 1, "same"), ((3, 3), 2, 1), ((2, 3), (2, 1), (1, 0)), ((1, 1), 1, 0), ((3, 3), 3, 2)],
)
def test_conv2d_matches_torch(kernel, stride, padding):
    torch = pytest.importorskip("torch")
    images = RNG.normal(size=(2, 7, 6, 3))
    weights = RNG.normal(size=(*kernel, 3, 4))
    x = sb.input("x", (None, 7, 6, 3), "float64")
    out = sb.evaluate(nn.conv2d(x, sb.const(weights), stride, padding), {x: images})
    expected = torch.nn.functional.conv2d(
        _nchw(torch, images), torch.tensor(weights).permute(3, 2, 0, 1), stride=stride, padding=padding
    )
    np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-10, atol=1e-12)


def test_same_padding_keeps_the_size_and_puts_an_odd_extra_after():
    x = sb.input("x", (None, 5, 4, 1), "float64")
    for stride, size in [(1, (5, 4)), (2, (3, 2)), (3, (2, 2))]:
        assert nn.Conv2D(1, 2, 2, stride=stride, padding="same", dtype="float64")(x).shape == (None, *size, 2)
    images = RNG.normal(size=(1, 5, 4, 1))
    out = sb.evaluate(nn.conv2d(x, sb.const(np.ones((2, 2, 1, 1))), 1, "same"), {x: images})[0, :, :, 0]
    padded = np.pad(images[0, :, :, 0], ((0, 1), (0, 1)))
    expected = padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_conv2d_layer_adds_the_bias_and_the_activation():
    layer = nn.Conv2D(2, 3, 3, padding=1, activation="tanh", seed=0, dtype="float64")
    layer.b.value = RNG.normal(size=3)
    x = sb.input("x", (None, 4, 4, 2), "float64")
    images = RNG.normal(size=(2, 4, 4, 2))
    plain = sb.evaluate(nn.conv2d(x, layer.K, 1, 1), {x: images})
    np.testing.assert_allclose(sb.evaluate(layer(x), {x: images}), np.tanh(plain + layer.b.value), rtol=1e-12)
    assert layer.K.shape == (3, 3, 2, 3) and [p.label for p in layer.parameters().values()] == ["K", "b"]


def test_the_kernel_initialiser_uses_the_fans_of_a_convolution():
    kernel = nn.Conv2D(8, 16, 3, seed=0).K.value
    assert abs(kernel.std() / np.sqrt(2 / (3 * 3 * 8)) - 1) < 0.1  # He normal: fan-in kh*kw*Cin


@pytest.mark.parametrize("size, stride", [(2, None), (3, 2), (2, 1), ((2, 3), None), (3, None)])
@pytest.mark.parametrize("pool, reference", [(nn.MaxPool2D, "max_pool2d"), (nn.AvgPool2D, "avg_pool2d")])
def test_pooling_matches_torch(pool, reference, size, stride):
    torch = pytest.importorskip("torch")
    images = RNG.normal(size=(2, 7, 6, 3))
    x = sb.input("x", (None, 7, 6, 3), "float64")
    out = sb.evaluate(pool(size, stride)(x), {x: images})
    expected = getattr(torch.nn.functional, reference)(_nchw(torch, images), size, stride)
    np.testing.assert_allclose(out, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-12)


@pytest.mark.parametrize("stride, padding", [(1, "same"), (2, 1)])
def test_conv2d_gradients_match_central_differences(stride, padding):
    layer = nn.Conv2D(2, 3, (3, 2), stride=stride, padding=padding, activation="tanh", seed=0, dtype="float64")
    layer.b.value = RNG.normal(size=3)
    x = sb.input("x", (None, 5, 4, 2), "float64")
    out = layer(x)
    weights = sb.input("weights", out.shape, "float64")
    feeds = {x: RNG.normal(size=(2, 5, 4, 2)), weights: RNG.normal(size=(2, *out.shape[1:]))}
    sb.check_grads((out * weights).sum(), [layer.K, layer.b, x], feeds)


@pytest.mark.parametrize("pool", [nn.MaxPool2D(2), nn.MaxPool2D(2, stride=1), nn.AvgPool2D(2), nn.AvgPool2D(3, 2)])
def test_pooling_gradients_match_central_differences(pool):
    x = sb.input("x", (None, 5, 5, 2), "float64")
    out = pool(x)
    weights = sb.input("weights", out.shape, "float64")
    feeds = {x: RNG.normal(size=(2, 5, 5, 2)), weights: RNG.normal(size=(2, *out.shape[1:]))}  # no ties
    sb.check_grads((sb.tanh(out) * weights).sum(), [x], feeds)


def _cnn():
    # Both pooling formulations (tiles, and overlapping windows) and a strided convolution.
    return nn.Sequential(
        nn.Conv2D(1, 4, 3, padding="same", activation="relu", seed=0),
        nn.MaxPool2D(2),
        nn.Conv2D(4, 6, 2, stride=(1, 2), padding=1, seed=1),
        nn.AvgPool2D(2, stride=1),
        nn.Flatten(),
        nn.LayerNorm(12),
        nn.Dense(12, 3, seed=2),
    )


def test_a_compiled_training_step_of_a_cnn_follows_the_evaluator_and_lowers_the_loss():
    model = _cnn()
    x, y = sb.input("images", (None, 4, 4, 1)), sb.input("labels", (None,), "int64")
    loss = sb.softmax_cross_entropy(model(x), y)
    params = list(model.parameters().values())
    step = sb.compile_step(loss, [x, y], params, sb.optim.SGD(lr=0.2))
    labels = np.arange(96) % 3
    images = np.zeros((96, 4, 4, 1), np.float32)  # class k: a bright row k
    images[np.arange(96), labels, :, 0] = 1
    images += RNG.normal(scale=0.1, size=images.shape).astype(np.float32)

    # One compiled step against the evaluator: the same loss, and every parameter moved by -lr·gradient.
    feeds = {x: images[:8], y: labels[:8]}
    expected_loss, *grads = sb.evaluate([loss, *sb.grad(loss, params)], feeds)
    before = [p.value.copy() for p in params]
    np.testing.assert_allclose(step(images[:8], labels[:8]), expected_loss, rtol=1e-5)
    for param, start, gradient in zip(params, before, grads):
        np.testing.assert_allclose(param.value, start - 0.2 * gradient, rtol=1e-4, atol=1e-6, err_msg=param.label)

    first = step.epoch(images, labels, batch_size=16, seed=0)
    for epoch in range(1, 15):
        last = step.epoch(images, labels, batch_size=16, seed=epoch)
    assert last < 0.2 * first


def test_bad_inputs_raise_clear_errors():
    conv = nn.Conv2D(3, 8, 3)
    with pytest.raises(sb.GraphError, match=r"input x \(n, 8, 8, 1\) has 1 channel, expected 3"):
        conv(sb.input("x", (None, 8, 8, 1)))
    with pytest.raises(sb.GraphError, match=r"expected rank 4 \(batch, height, width, channels\)"):
        conv(sb.input("x", (None, 64)))
    with pytest.raises(sb.GraphError, match="is 2x2 \\(padded 2x2\\), smaller than the kernel 3x3"):
        conv(sb.input("x", (None, 2, 2, 3)))
    with pytest.raises(sb.GraphError, match="padding must be an int, a pair of ints, 'same' or 'valid'"):
        nn.Conv2D(3, 8, 3, padding="full")
    with pytest.raises(sb.GraphError, match="padding must not be negative"):
        nn.Conv2D(3, 8, 3, padding=-1)
    with pytest.raises(sb.GraphError, match="kernel_size must be an int or a pair of ints"):
        nn.Conv2D(3, 8, (3, 3, 3))
    with pytest.raises(sb.GraphError, match="stride_height must be a positive int"):
        nn.Conv2D(3, 8, 3, stride=(0, 1))
    with pytest.raises(sb.GraphError, match="smaller than the window 3x3"):
        nn.MaxPool2D(3)(sb.input("x", (None, 2, 5, 1)))
    with pytest.raises(sb.GraphError, match="size and stride must be positive"):
        nn.AvgPool2D(0)
    kernel = sb.param("K", (3, 3, 2, 4))
    with pytest.raises(sb.GraphError, match=r"input x \(n, 5, 5, 3\) does not fit the kernel K \(3, 3, 2, 4\)"):
        nn.conv2d(sb.input("x", (None, 5, 5, 3)), kernel)
    with pytest.raises(sb.GraphError, match=r"kernel K \(3, 3\) must be \(kh, kw, Cin, Cout\)"):
        nn.conv2d(sb.input("x", (None, 5, 5, 3)), sb.param("K", (3, 3)))
