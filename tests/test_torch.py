"""Gradients against PyTorch's autograd, in float64."""

import numpy as np
import pytest
import sympy

import symbackprop as sb

torch = pytest.importorskip("torch")
F = torch.nn.functional

ACTIVATIONS = {"tanh": (sb.tanh, torch.tanh), "relu": (sb.relu, torch.relu), "sigmoid": (sb.sigmoid, torch.sigmoid)}


def same_grads(loss, params, feeds, torch_loss, torch_params):
    """Evaluate ``loss`` and its gradients, run torch backward, and compare both."""
    value, *grads = sb.evaluate([loss, *sb.grad(loss, params)], feeds)
    torch_value = torch_loss()
    torch_value.backward()
    np.testing.assert_allclose(value, torch_value.item(), rtol=1e-12)
    for p, g, tp in zip(params, grads, torch_params):
        assert g.shape == tuple(tp.shape), p.label
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=p.label)


def leaf(array):
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def mlp(sizes, activation, seed=0):
    """Params of an MLP in both frameworks and the functions that run it."""
    rng = np.random.default_rng(seed)
    arrays = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        arrays += [rng.normal(0, 1 / np.sqrt(fan_in), (fan_in, fan_out)), rng.normal(0, 0.5, fan_out)]
    params = [sb.param(f"p{i}", a.shape, init=a, dtype="float64") for i, a in enumerate(arrays)]
    torch_params = [leaf(a) for a in arrays]
    act, torch_act = ACTIVATIONS[activation]

    def run(h, ps, fn):
        for i in range(0, len(ps), 2):
            h = h @ ps[i] + ps[i + 1]
            h = fn(h) if i + 2 < len(ps) else h
        return h

    return params, torch_params, lambda x: run(x, params, act), lambda x: run(x, torch_params, torch_act)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("loss_name", ["softmax_cross_entropy", "mse"])
def test_mlp_gradients_match_torch(activation, loss_name):
    rng = np.random.default_rng(1)
    params, torch_params, net, torch_net = mlp([5, 7, 6, 4], activation)
    batch = 9
    x = sb.input("x", (None, 5), "float64")
    X = rng.normal(size=(batch, 5))
    if loss_name == "mse":
        y, Y = sb.input("y", (None, 4), "float64"), rng.normal(size=(batch, 4))
        loss = sb.mse(net(x), y)

        def torch_loss():
            return F.mse_loss(torch_net(torch.tensor(X)), torch.tensor(Y))
    else:
        y, Y = sb.input("y", (None,), "int64"), rng.integers(0, 4, batch)
        loss = sb.softmax_cross_entropy(net(x), y)

        def torch_loss():
            return F.cross_entropy(torch_net(torch.tensor(X)), torch.tensor(Y))

    same_grads(loss, params, {x: X, y: Y}, torch_loss, torch_params)


def test_parameter_used_twice_matches_torch():
    rng = np.random.default_rng(2)
    A, X = rng.normal(size=(4, 4)) / 2, rng.normal(size=(3, 4))
    W, tW = sb.param("W", (4, 4), init=A, dtype="float64"), leaf(A)
    x = sb.input("x", (None, 4), "float64")
    loss = (sb.tanh(x @ W) @ W.T * W[0]).sum()

    def torch_loss():
        return (torch.tanh(torch.tensor(X) @ tW) @ tW.T * tW[0]).sum()

    same_grads(loss, [W], {x: X}, torch_loss, [tW])


def test_bias_broadcasting_matches_torch():
    rng = np.random.default_rng(3)
    B, C, X = rng.normal(size=3), rng.normal(size=(2, 1, 1)), rng.normal(size=(2, 4, 3))
    b, c, tb, tc = (
        sb.param("b", (3,), init=B, dtype="float64"),
        sb.param("c", (2, 1, 1), init=C, dtype="float64"),
        leaf(B),
        leaf(C),
    )
    x = sb.input("x", (2, 4, 3), "float64")
    loss = sb.mean(sb.sigmoid(x * b + c) ** 2)

    def torch_loss():
        return (torch.sigmoid(torch.tensor(X) * tb + tc) ** 2).mean()

    same_grads(loss, [b, c], {x: X}, torch_loss, [tb, tc])


def test_binary_cross_entropy_with_logits_matches_torch():
    rng = np.random.default_rng(4)
    A, X, Y = rng.normal(size=(3, 2)), rng.normal(size=(6, 3)) * 3, rng.uniform(size=(6, 2))
    W, tW = sb.param("W", (3, 2), init=A, dtype="float64"), leaf(A)
    x, y, tY = sb.input("x", (None, 3), "float64"), sb.input("y", (None, 2), "float64"), leaf(Y)
    loss = sb.binary_cross_entropy(x @ W, y)

    def torch_loss():
        return F.binary_cross_entropy_with_logits(torch.tensor(X) @ tW, tY)

    same_grads(loss, [W, y], {x: X, y: Y}, torch_loss, [tW, tY])


def test_custom_function_matches_torch():
    t = sympy.Symbol("t")
    swish = sb.function("swish", t / (1 + sympy.exp(-t)), [t])
    rng = np.random.default_rng(5)
    A, X = rng.normal(size=(3, 5)), rng.normal(size=(7, 3)) * 2
    W, tW = sb.param("W", (3, 5), init=A, dtype="float64"), leaf(A)
    x = sb.input("x", (None, 3), "float64")
    loss = sb.mean(swish(x @ W) ** 2)

    def torch_loss():
        h = torch.tensor(X) @ tW
        return ((h / (1 + torch.exp(-h))) ** 2).mean()

    same_grads(loss, [W], {x: X}, torch_loss, [tW])
