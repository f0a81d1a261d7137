"""Gradient clipping by global norm: the graph nodes against NumPy, optimizers that clip against
their reference step, PyTorch's clip_grad_norm_ and the compiled step, and the step cache."""

import numpy as np
import pytest

import symbackprop as sb
from codegen import cache, library
from symbackprop import optim

RNG = np.random.default_rng(0)
INITIAL = [RNG.normal(0, 0.5, shape) for shape in [(3, 4), (4,), (4, 2)]]
X, Y = RNG.normal(size=(6, 3)), 3 * RNG.normal(size=(6, 2))


def mlp(dtype="float64"):
    params = [sb.param(name, a.shape, init=a.copy(), dtype=dtype) for name, a in zip(["W1", "b1", "W2"], INITIAL)]
    x, y = sb.input("x", (None, 3), dtype), sb.input("y", (None, 2), dtype)
    W1, b1, W2 = params
    return params, sb.mse(sb.tanh(x @ W1 + b1) @ W2, y), (x, y)


def gradient_norm():
    params, loss, (x, y) = mlp()
    return np.sqrt(sum(np.sum(g**2) for g in sb.evaluate(sb.grad(loss, params), {x: X, y: Y})))


def test_clip_by_global_norm_scales_every_gradient_by_one_factor():
    a, b = sb.input("a", (3, 2), "float64"), sb.input("b", (4,), "float32")
    A, B = RNG.normal(size=(3, 2)), RNG.normal(size=4).astype(np.float32)
    norm = np.sqrt(np.sum(A**2) + np.sum(B.astype(np.float64) ** 2))
    for bound in (0.5 * norm, 2 * norm):
        clipped_a, clipped_b = sb.evaluate(optim.clip_by_global_norm([a, b], bound), {a: A, b: B})
        factor = min(1.0, bound / (norm + 1e-6))
        np.testing.assert_allclose(clipped_a, A * factor, rtol=1e-6)  # b's squares are summed in float32
        assert clipped_b.dtype == np.float32
        np.testing.assert_allclose(clipped_b, B * np.float32(factor), rtol=1e-6)
    zeros = sb.evaluate(optim.clip_by_global_norm([a], 1.0), {a: np.zeros((3, 2))})[0]
    assert not zeros.any() and np.isfinite(zeros).all()  # 1/(0 + 10⁻⁶): no division by zero


def test_clip_by_global_norm_is_one_reduction_per_gradient():
    a, b = sb.input("a", (3, 2), "float64"), sb.input("b", (4,), "float64")
    clipped = optim.clip_by_global_norm([a, b], 1.0)
    order = sb.graph.topological_order(clipped)
    assert [node.op for node in order].count("sum") == 2
    assert all(c.shape == x.shape and c.op == "map" for c, x in zip(clipped, [a, b]))


CLIPPING = {
    "sgd": lambda c: optim.SGD(lr=0.1, clip_norm=c),
    "momentum_weight_decay": lambda c: optim.Momentum(lr=0.1, momentum=0.9, weight_decay=0.01, clip_norm=c),
    "adam": lambda c: optim.Adam(lr=0.05, clip_norm=c),
    "adamw": lambda c: optim.AdamW(lr=0.05, weight_decay=0.1, clip_norm=c),
    "rmsprop_scheduled": lambda c: optim.RMSProp(lr=sb.schedules.exponential(0.01, 0.9), clip_norm=c),
}


def test_formula_and_repr_show_the_clipping():
    opt = CLIPPING["momentum_weight_decay"](1.5)
    assert str(opt.formula()) == "g ← g·min(c/(‖g‖ + 10⁻⁶), 1)\ng ← g + λ·w\nv ← μ·v + g\nw ← w − η·v"
    assert r"g &\leftarrow g \min\left(\frac{c}{\lVert g \rVert + 10^{-6}}, 1\right)" in opt.formula().latex()
    assert repr(opt) == "Momentum(lr=0.1, momentum=0.9, weight_decay=0.01, clip_norm=1.5, nesterov=False)"
    assert opt.clip_norm == 1.5 and optim.SGD(lr=0.1).clip_norm is None
    # Clipping happens before the rules: they are the same with and without it.
    assert opt.update_rules() == CLIPPING["momentum_weight_decay"](None).update_rules()


def _train_with_graph(opt, steps):
    params, loss, (x, y) = mlp()
    new_values, new_states, state_inputs, step = opt.step_graph(params, sb.grad(loss, params))
    states = opt.init_states(params)
    for t in range(1, steps + 1):
        feeds = {x: X, y: Y, **{state_inputs[key]: value for key, value in states.items()}}
        if step is not None:
            feeds[step] = float(t)
        values = sb.evaluate([*new_values.values(), *new_states.values()], feeds)
        for p, value in zip(new_values, values):
            p.value = value
        states = dict(zip(new_states, values[len(new_values) :]))
    return params, states


@pytest.mark.parametrize("name", CLIPPING)
@pytest.mark.parametrize("fraction", [0.3, 3.0])  # clipping every step, or never
def test_step_graph_matches_the_reference_step(name, fraction):
    bound = fraction * gradient_norm()
    params, states = _train_with_graph(CLIPPING[name](bound), 6)
    twins, loss, (x, y) = mlp()
    reference = CLIPPING[name](bound)
    grads, reference_states = sb.grad(loss, twins), reference.init_states(twins)
    for t in range(1, 7):
        reference.reference_step(twins, sb.evaluate(grads, {x: X, y: Y}), reference_states, t)
    for p, q in zip(params, twins):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-12, atol=1e-14, err_msg=p.label)
    unclipped, _ = _train_with_graph(CLIPPING[name](None), 6)
    assert np.allclose(params[0].value, unclipped[0].value) == (fraction > 1)


TORCH = {  # torch optimizer and arguments, our state -> torch's state
    "sgd": ("SGD", {"lr": 0.1}, {}),
    "momentum_weight_decay": ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}, {"v": "momentum_buffer"}),
    "adam": ("Adam", {"lr": 0.05}, {"m": "exp_avg", "v": "exp_avg_sq"}),
    "adamw": ("AdamW", {"lr": 0.05, "weight_decay": 0.1}, {"m": "exp_avg", "v": "exp_avg_sq"}),
}


@pytest.mark.parametrize("name", TORCH)
def test_matches_torch_clip_grad_norm(name):
    torch = pytest.importorskip("torch")
    torch_name, torch_args, torch_states = TORCH[name]
    bound = 0.3 * gradient_norm()
    leaves = [torch.tensor(a, requires_grad=True) for a in INITIAL]
    torch_opt = getattr(torch.optim, torch_name)(leaves, **torch_args)
    W1, b1, W2 = leaves
    for _ in range(5):
        torch_opt.zero_grad()
        torch.nn.functional.mse_loss(torch.tanh(torch.tensor(X) @ W1 + b1) @ W2, torch.tensor(Y)).backward()
        torch.nn.utils.clip_grad_norm_(leaves, bound)
        torch_opt.step()
    params, states = _train_with_graph(CLIPPING[name](bound), 5)
    for p, leaf in zip(params, leaves):
        np.testing.assert_allclose(p.value, leaf.detach().numpy(), rtol=1e-10, atol=1e-13, err_msg=p.label)
        for state, torch_state in torch_states.items():
            np.testing.assert_allclose(states[p, state], torch_opt.state[leaf][torch_state].numpy(), rtol=1e-10)


@pytest.mark.parametrize("name, dtype", [("sgd", "float32"), ("adam", "float64"), ("rmsprop_scheduled", "float64")])
def test_compiled_step_matches_the_reference_step(name, dtype):
    bound = 0.3 * gradient_norm()
    params, loss, (x, y) = mlp(dtype)
    twins, twin_loss, (tx, ty) = mlp(dtype)
    step = sb.compile_step(loss, [x, y], params, CLIPPING[name](bound))
    reference = CLIPPING[name](bound)
    grads, states = sb.grad(twin_loss, twins), reference.init_states(twins)
    tolerance = dict(rtol=1e-10, atol=1e-13) if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    for t in range(1, 7):
        batch = slice(t % 2, t % 2 + 5)
        feeds = {tx: X[batch].astype(dtype), ty: Y[batch].astype(dtype)}
        reference.reference_step(twins, sb.evaluate(grads, feeds), states, t)
        step(X[batch], Y[batch])
        for p, q in zip(params, twins):
            np.testing.assert_allclose(p.value, q.value, **tolerance, err_msg=f"{p.label} at step {t}")


def test_a_cached_step_with_another_clip_norm_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMBACKPROP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMBACKPROP_CACHE", "1")
    library.load()  # the kernel library has entries of its own; count the steps' only

    def compiled(bound):
        params, loss, (x, y) = mlp()
        step = sb.compile_step(loss, [x, y], params, optim.SGD(lr=0.1, clip_norm=bound))
        step(X, Y)
        return params[0].value

    cache.reset_statistics()
    first = compiled(1.0)
    entries = cache.statistics()["stores"]  # the program and its modules' object code
    assert cache.statistics()["hits"] == 0 and entries >= 2
    cache.reset_statistics()
    np.testing.assert_array_equal(compiled(1.0), first)
    assert cache.statistics()["hits"] == entries
    cache.reset_statistics()
    other = compiled(0.01)
    # The program and the module that clips are new; a module without the clipping may be
    # the same code as before, and load from the cache.
    assert cache.statistics()["stores"] >= 2 and cache.statistics()["hits"] <= entries - 2
    assert not np.allclose(other, first)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: optim.SGD(lr=0.1, clip_norm=0), r"SGD: clip_norm \(c\) must be > 0, got 0"),
        (lambda: optim.Adam(clip_norm=float("inf")), r"Adam: clip_norm \(c\) must be a finite number > 0, got inf"),
        (lambda: optim.RMSProp(0.1, clip_norm="1"), r"RMSProp: clip_norm \(c\) must be a finite number > 0"),
        (lambda: optim.clip_by_global_norm([], 1.0), r"clip_by_global_norm: grads must be a non-empty list"),
        (
            lambda: optim.clip_by_global_norm([sb.input("labels", (3,), "int64")], 1.0),
            r"grads must be a non-empty list of float Tensors",
        ),
        (lambda: optim.clip_by_global_norm([sb.input("a", (3,))], -1.0), r"clip_norm \(c\) must be > 0, got -1.0"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises(sb.GraphError, match=message):
        make()
