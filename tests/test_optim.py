"""Optimizers: the symbolic update (graph + evaluator) against a NumPy reference and PyTorch."""

import numpy as np
import pytest
import sympy

import symbackprop as sb
from symbackprop import optim

# name: (our optimizer, torch.optim class name, its keyword arguments, our state -> torch's state)
CASES = {
    "sgd": (lambda: optim.SGD(lr=0.1), "SGD", {"lr": 0.1}, {}),
    "momentum": (
        lambda: optim.Momentum(lr=0.1, momentum=0.9),
        "SGD",
        {"lr": 0.1, "momentum": 0.9},
        {"v": "momentum_buffer"},
    ),
    "nesterov": (
        lambda: optim.Momentum(lr=0.05, momentum=0.8, nesterov=True),
        "SGD",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
        {"v": "momentum_buffer"},
    ),
    "sgd_weight_decay": (lambda: optim.SGD(lr=0.1, weight_decay=0.05), "SGD", {"lr": 0.1, "weight_decay": 0.05}, {}),
    "momentum_weight_decay": (
        lambda: optim.Momentum(lr=0.1, momentum=0.9, weight_decay=0.02),
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.02},
        {"v": "momentum_buffer"},
    ),
    "nesterov_weight_decay": (
        lambda: optim.Momentum(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
        "SGD",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
        {"v": "momentum_buffer"},
    ),
    "adam": (lambda: optim.Adam(lr=0.01), "Adam", {"lr": 0.01}, {"m": "exp_avg", "v": "exp_avg_sq"}),
    "adam_tuned": (
        lambda: optim.Adam(lr=0.05, beta1=0.8, beta2=0.99, eps=1e-3),
        "Adam",
        {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-3},
        {"m": "exp_avg", "v": "exp_avg_sq"},
    ),
    "adamw": (
        lambda: optim.AdamW(lr=0.01, weight_decay=0.1),
        "AdamW",
        {"lr": 0.01, "weight_decay": 0.1},
        {"m": "exp_avg", "v": "exp_avg_sq"},
    ),
    "rmsprop": (
        lambda: optim.RMSProp(lr=0.01, rho=0.9, eps=1e-6),
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-6},
        {"v": "square_avg"},
    ),
}
STEPS = 5
RNG = np.random.default_rng(0)
INITIAL = [RNG.normal(0, 0.5, shape) for shape in [(3, 4), (4,), (4, 2), (2,)]]
X, Y = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 2))


def mlp(dtype="float64"):
    """A fresh tanh MLP with an MSE loss; every call starts from the same weights."""
    params = [sb.param(name, a.shape, init=a, dtype=dtype) for name, a in zip(["W1", "b1", "W2", "b2"], INITIAL)]
    x, y = sb.input("x", (None, 3), dtype), sb.input("y", (None, 2), dtype)
    W1, b1, W2, b2 = params
    loss = sb.mse(sb.tanh(x @ W1 + b1) @ W2 + b2, y)
    return params, loss, {x: X, y: Y}


def symbolic_steps(opt, dtype="float64"):
    """Train with the step graph and the evaluator; yield (params, states) after each step."""
    params, loss, feeds = mlp(dtype)
    new_values, new_states, state_inputs, step = opt.step_graph(params, sb.grad(loss, params))
    states = opt.init_states(params)
    for t in range(1, STEPS + 1):
        step_feeds = {**feeds, **{state_inputs[key]: value for key, value in states.items()}}
        if step is not None:
            step_feeds[step] = float(t)
        values = sb.evaluate([*new_values.values(), *new_states.values()], step_feeds)
        for p, value in zip(new_values, values):
            p.value = value
        states = dict(zip(new_states, values[len(new_values) :]))
        yield params, states


def reference_steps(opt, dtype="float64"):
    params, loss, feeds = mlp(dtype)
    grads = sb.grad(loss, params)
    states = opt.init_states(params)
    for t in range(1, STEPS + 1):
        opt.reference_step(params, sb.evaluate(grads, feeds), states, t)
        yield params, states


@pytest.mark.parametrize("name", CASES)
def test_step_graph_matches_reference_step(name):
    opt = CASES[name][0]()
    for (params, states), (ref_params, ref_states) in zip(symbolic_steps(opt), reference_steps(opt)):
        for p, q in zip(params, ref_params):
            assert p.value.dtype == np.float64
            np.testing.assert_allclose(p.value, q.value, rtol=1e-13, atol=1e-15, err_msg=p.label)
            for state in opt.state_names:
                np.testing.assert_allclose(states[p, state], ref_states[q, state], rtol=1e-13, atol=1e-15)
    assert not np.allclose(params[0].value, INITIAL[0])  # it did train


@pytest.mark.parametrize("name", CASES)
def test_step_graph_matches_torch(name):
    torch = pytest.importorskip("torch")
    make, torch_name, torch_args, torch_states = CASES[name]
    opt = make()
    leaves = [torch.tensor(a, requires_grad=True) for a in INITIAL]
    torch_opt = getattr(torch.optim, torch_name)(leaves, **torch_args)
    x, y = torch.tensor(X), torch.tensor(Y)
    W1, b1, W2, b2 = leaves
    for params, states in symbolic_steps(opt):
        torch_opt.zero_grad()
        torch.nn.functional.mse_loss(torch.tanh(x @ W1 + b1) @ W2 + b2, y).backward()
        torch_opt.step()
        for p, leaf in zip(params, leaves):
            np.testing.assert_allclose(p.value, leaf.detach().numpy(), rtol=1e-10, atol=1e-13, err_msg=p.label)
            for state, torch_state in torch_states.items():
                np.testing.assert_allclose(states[p, state], torch_opt.state[leaf][torch_state].numpy(), rtol=1e-10)


@pytest.mark.parametrize("name", CASES)
def test_float32_params_stay_float32(name):
    opt = CASES[name][0]()
    for (params, states), (ref_params, _) in zip(symbolic_steps(opt, "float32"), reference_steps(opt, "float32")):
        for p, q in zip(params, ref_params):
            assert p.value.dtype == np.float32
            assert all(states[p, state].dtype == np.float32 for state in opt.state_names)
            # In float32 Adam's 1 − β₂ᵗ keeps about five digits (β₂ = 0.999 is rounded).
            np.testing.assert_allclose(p.value, q.value, rtol=2e-5, atol=1e-6, err_msg=p.label)


FORMULAS = {
    "sgd": "w ← w − η·g",
    "momentum": "v ← μ·v + g\nw ← w − η·v",
    "nesterov": "v ← μ·v + g\nw ← w − η·(g + μ·v)",
    "adam": "m ← β₁·m + (1 − β₁)·g\nv ← β₂·v + (1 − β₂)·g²\nm̂ = m/(1 − β₁ᵗ)\nv̂ = v/(1 − β₂ᵗ)\nw ← w − η·m̂/(√v̂ + ε)",
    "adamw": (
        "m ← β₁·m + (1 − β₁)·g\nv ← β₂·v + (1 − β₂)·g²\nm̂ = m/(1 − β₁ᵗ)\nv̂ = v/(1 − β₂ᵗ)\nw ← w − η·(m̂/(√v̂ + ε) + λ·w)"
    ),
    "rmsprop": "v ← ρ·v + (1 − ρ)·g²\nw ← w − η·g/(√v + ε)",
    "sgd_weight_decay": "g ← g + λ·w\nw ← w − η·g",
    "nesterov_weight_decay": "g ← g + λ·w\nv ← μ·v + g\nw ← w − η·(g + μ·v)",
}


@pytest.mark.parametrize("name", FORMULAS)
def test_formula_text(name):
    assert str(CASES[name][0]().formula()) == FORMULAS[name]


def test_formula_latex():
    assert optim.Adam().formula().latex() == (
        "\\begin{aligned}\n"
        "m &\\leftarrow \\beta_{1} m + \\left(1 - \\beta_{1}\\right) g \\\\\n"
        "v &\\leftarrow \\beta_{2} v + \\left(1 - \\beta_{2}\\right) g^{2} \\\\\n"
        "\\hat{m} &= \\frac{m}{1 - \\beta_{1}^{t}} \\\\\n"
        "\\hat{v} &= \\frac{v}{1 - \\beta_{2}^{t}} \\\\\n"
        "w &\\leftarrow w - \\frac{\\eta \\hat{m}}{\\sqrt{\\hat{v}} + \\varepsilon}\n"
        "\\end{aligned}"
    )
    assert (
        optim.SGD(0.1).formula()._repr_latex_()
        == "$\\displaystyle \\begin{aligned}\nw &\\leftarrow w - \\eta g\n\\end{aligned}$"
    )


@pytest.mark.parametrize("name", CASES)
def test_update_rules_read_old_values_only(name):
    opt = CASES[name][0]()
    rules = opt.update_rules()
    assert list(rules) == [*opt.state_names, "w"]
    w, g, m, v, t = optim.w, optim.g, optim.m, optim.v, optim.t
    expected = (w, g, *[{"m": m, "v": v}[s] for s in opt.state_names]) + ((t,) if name.startswith("adam") else ())
    assert opt.symbols == expected
    for fn in rules.values():
        assert fn.symbols == expected
        assert fn.body.free_symbols <= set(expected)  # hyper-parameters are numbers, m̂ and v̂ substituted
    # Every rule applied to the same old values gives the reference step.
    rng = np.random.default_rng(1)
    old = {"w": rng.normal(size=5), "g": rng.normal(size=5), **{s: rng.uniform(0.1, 1, 5) for s in opt.state_names}}
    args = [old[s.name] for s in expected if s is not t] + ([3.0] if t in expected else [])
    new_w, new_state = opt._reference(old["w"], old["g"], {s: old[s] for s in opt.state_names}, 3)
    np.testing.assert_allclose(rules["w"].numpy(*args), new_w, rtol=1e-13)
    for s in opt.state_names:
        np.testing.assert_allclose(rules[s].numpy(*args), new_state[s], rtol=1e-13)


def test_update_rules_have_the_hyper_parameters_as_numbers():
    (rule,) = optim.SGD(lr=0.25).update_rules().values()
    assert rule.name == "sgd_w"
    assert rule.body == optim.w - optim.g / 4
    momentum = optim.Momentum(lr=0.1, momentum=0.5).update_rules()
    assert momentum["v"].body == optim.v / 2 + optim.g
    assert sympy.simplify(momentum["w"].body - (optim.w - (optim.v / 2 + optim.g) / 10)) == 0


def test_step_graph_names_and_shapes():
    W = sb.param("W", (2, 3), dtype="float32")
    opt = optim.Adam()
    new_values, new_states, state_inputs, step = opt.step_graph([W], [sb.input("gW", (2, 3))])
    assert step.op == "input" and step.attrs["name"] == "step" and step.shape == () and step.dtype == "float64"
    assert {key: s.attrs["name"] for key, s in state_inputs.items()} == {(W, "m"): "W.m", (W, "v"): "W.v"}
    assert all(s.shape == (2, 3) and s.dtype == "float32" for s in state_inputs.values())
    assert new_values[W].op == "map" and new_values[W].attrs["fn"] is opt.update_rules()["w"]
    assert set(new_states) == {(W, "m"), (W, "v")}
    assert all(n.shape == (2, 3) and n.dtype == "float32" for n in [new_values[W], *new_states.values()])
    # A step input of one's own, and no step input where no rule uses it.
    mine = sb.input("my_step", (), "float32")
    assert opt.step_graph([W], [sb.input("gW", (2, 3))], step=mine).step_input is mine
    assert optim.Momentum(0.1).step_graph([W], [sb.input("gW", (2, 3))]).step_input is None


def test_init_state_is_zeros():
    value = np.ones((2, 3), np.float32)
    state = optim.Adam().init_state(value)
    assert list(state) == ["m", "v"]
    assert all(s.shape == (2, 3) and s.dtype == np.float32 and not s.any() for s in state.values())
    assert optim.SGD(0.1).init_state(value) == {}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: optim.SGD(lr=0), r"SGD: lr \(η\) must be > 0, got 0"),
        (lambda: optim.SGD(lr=-0.1), r"lr \(η\) must be > 0"),
        (lambda: optim.SGD(lr=float("nan")), r"lr \(η\) must be a finite number > 0, got nan"),
        (lambda: optim.SGD(lr="0.1"), r"lr \(η\) must be a finite number > 0, got '0.1'"),
        (lambda: optim.Momentum(0.1, momentum=1.0), r"Momentum: momentum \(μ\) must be in \[0, 1\), got 1.0"),
        (lambda: optim.Momentum(0.1, momentum=-0.5), r"momentum \(μ\) must be in \[0, 1\)"),
        (lambda: optim.Momentum(0.1, nesterov="yes"), r"nesterov must be True or False"),
        (lambda: optim.Adam(beta1=1), r"Adam: beta1 \(β₁\) must be in \[0, 1\), got 1"),
        (lambda: optim.Adam(beta2=1.5), r"beta2 \(β₂\) must be in \[0, 1\)"),
        (lambda: optim.Adam(eps=0.0), r"eps \(ε\) must be > 0"),
        (lambda: optim.AdamW(weight_decay=-1e-2), r"AdamW: weight_decay \(λ\) must be >= 0"),
        (lambda: optim.RMSProp(0.1, rho=1.0), r"RMSProp: rho \(ρ\) must be in \[0, 1\)"),
    ],
)
def test_bad_hyper_parameters_raise(make, message):
    with pytest.raises(sb.GraphError, match=message):
        make()


def test_bad_step_graph_arguments_raise():
    W, b = sb.param("W", (2, 3)), sb.param("b", (3,))
    gW = sb.input("gW", (2, 3))
    opt = optim.Adam()
    with pytest.raises(sb.GraphError, match="2 params but 1 gradients"):
        opt.step_graph([W, b], [gW])
    with pytest.raises(sb.GraphError, match=r"the gradient of b must be a Tensor \(3,\) float32, got \(2, 3\) float32"):
        opt.step_graph([b], [gW])
    with pytest.raises(
        sb.GraphError, match=r"the gradient of W must be a Tensor \(2, 3\) float32, got \(2, 3\) float64"
    ):
        opt.step_graph([W], [sb.input("gW64", (2, 3), "float64")])
    with pytest.raises(sb.GraphError, match="is not a param"):
        opt.step_graph([gW], [gW])
    with pytest.raises(sb.GraphError, match="two params are named 'W'"):
        opt.step_graph([W, sb.param("W", (2, 3))], [gW, gW])
    with pytest.raises(sb.GraphError, match=r"step must be a float scalar Tensor \(shape \(\)\)"):
        opt.step_graph([W], [gW], step=sb.input("t", (None,)))


def test_bad_reference_step_arguments_raise():
    W = sb.param("W", (2,))
    opt = optim.Adam()
    states = opt.init_states([W])
    with pytest.raises(sb.GraphError, match=r"t must be the step number \(an int >= 1\), got None"):
        opt.reference_step([W], [np.ones(2)], states)
    with pytest.raises(sb.GraphError, match=r"the gradient of W has shape \(3,\)"):
        opt.reference_step([W], [np.ones(3)], states, 1)
    with pytest.raises(sb.GraphError, match=r"no state \['m', 'v'\] for W"):
        opt.reference_step([W], [np.ones(2)], {}, 1)


def test_repr():
    assert repr(optim.Momentum(0.1)) == "Momentum(lr=0.1, momentum=0.9, nesterov=False)"
    assert repr(optim.Adam()) == "Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08)"


def test_weight_decay_is_l2_added_to_the_gradient():
    opt = optim.Momentum(lr=0.1, momentum=0.5, weight_decay=0.2)
    assert repr(opt) == "Momentum(lr=0.1, momentum=0.5, weight_decay=0.2, nesterov=False)"
    assert opt.update_rules()["v"].body == optim.v / 2 + optim.g + optim.w / 5
    # No decay, no rule: weight_decay=0 is the optimizer without it.
    assert optim.SGD(lr=0.1, weight_decay=0).update_rules() == optim.SGD(lr=0.1).update_rules()
    assert repr(optim.SGD(lr=0.1, weight_decay=0.0)) == "SGD(lr=0.1)"
    with pytest.raises(sb.GraphError, match=r"SGD: weight_decay \(λ\) must be >= 0, got -0.1"):
        optim.SGD(lr=0.1, weight_decay=-0.1)
    with pytest.raises(sb.GraphError, match=r"Momentum: weight_decay \(λ\) must be a finite number >= 0, got 'x'"):
        optim.Momentum(lr=0.1, weight_decay="x")


def test_weight_decay_equals_an_l2_penalty_of_half_its_size():
    decayed, loss, feeds = mlp()
    penalised, penalised_loss, penalised_feeds = mlp()
    penalised_loss = penalised_loss + sb.l2_penalty(penalised, 0.05 / 2)
    opt, plain = optim.SGD(lr=0.1, weight_decay=0.05), optim.SGD(lr=0.1)
    grads, penalised_grads = sb.grad(loss, decayed), sb.grad(penalised_loss, penalised)
    for _ in range(3):
        opt.reference_step(decayed, sb.evaluate(grads, feeds), {})
        plain.reference_step(penalised, sb.evaluate(penalised_grads, penalised_feeds), {})
    for p, q in zip(decayed, penalised):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-13)


def test_key_names_everything_the_compiled_update_depends_on():
    keys = {
        optim.SGD(lr=0.1).key,
        optim.SGD(lr=0.2).key,
        optim.SGD(lr=0.1, weight_decay=0.01).key,
        optim.SGD(lr=0.1, clip_norm=1.0).key,
        optim.SGD(lr=0.1, clip_norm=2.0).key,
        optim.SGD(lr=sb.schedules.exponential(0.1, 0.9)).key,
        optim.Momentum(lr=0.1).key,
    }
    assert len(keys) == 7
    assert optim.SGD(lr=0.1, clip_norm=1.0).key == optim.SGD(lr=0.1, clip_norm=1).key
