"""Learning-rate schedules: values, printing, PyTorch's schedulers, the compiled expressions of t,
and optimizers that follow a schedule (evaluator, reference step and compiled step)."""

import math
import warnings

import numpy as np
import pytest
import sympy

import symbackprop as sb
from symbackprop import optim, schedules
from symbackprop.functions import apply
from symbackprop.scalar import ScalarFunction

S = schedules

# name: (schedule, its rate at step t written out in Python)
SCHEDULES = {
    "constant": (lambda: S.constant(0.05), lambda t: 0.05),
    "step_decay": (lambda: S.step_decay(0.1, step_size=7, gamma=0.5), lambda t: 0.1 * 0.5 ** ((t - 1) // 7)),
    "exponential": (lambda: S.exponential(0.1, gamma=0.9), lambda t: 0.1 * 0.9 ** (t - 1)),
    "cosine": (
        lambda: S.cosine(0.1, total_steps=20, min_lr=0.01),
        lambda t: 0.01 + 0.09 * (1 + math.cos(math.pi * min(t - 1, 20) / 20)) / 2,
    ),
    "warmup": (lambda: S.warmup(0.1, warmup_steps=5), lambda t: 0.1 * min(t / 5, 1)),
    "warmup_cosine": (
        lambda: S.warmup(S.cosine(0.2, total_steps=30), 4),
        lambda t: min(t / 4, 1) * 0.1 * (1 + math.cos(math.pi * min(t - 1, 30) / 30)),
    ),
    "product": (
        lambda: S.exponential(0.2, 0.95) * S.step_decay(0.5, 5, 0.5),
        lambda t: 0.2 * 0.95 ** (t - 1) * 0.5 * 0.5 ** ((t - 1) // 5),
    ),
}
STEPS = range(1, 41)


@pytest.mark.parametrize("name", SCHEDULES)
def test_values_follow_the_written_formula(name):
    make, expected = SCHEDULES[name]
    schedule = make()
    for t in STEPS:
        assert schedule(t) == pytest.approx(expected(t), rel=1e-14), t
    assert schedule.uses_step == (name != "constant")


TEXTS = {
    "constant": "0.05",
    "step_decay": "0.1·0.5^⌊(t − 0.5)/7⌋",
    "exponential": "0.1·0.9^(t − 1)",
    "cosine": "0.01 + 0.045·(1 + cos(π·min(t − 1, 20)/20))",
    "warmup": "min(t/5, 1)·0.1",
    "warmup_cosine": "min(t/4, 1)·0.1·(1 + cos(π·min(t − 1, 30)/30))",
    "product": "0.2·0.95^(t − 1)·0.5·0.5^⌊(t − 0.5)/5⌋",
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_str_and_repr(name):
    schedule = SCHEDULES[name][0]()
    assert str(schedule) == TEXTS[name]
    assert eval(repr(schedule), {**vars(S)})(11) == schedule(11)  # the repr rebuilds the schedule


def test_latex():
    assert S.step_decay(0.1, 10, 0.5).latex() == r"0.1 \cdot 0.5^{\left\lfloor{\frac{t - 0.5}{10}}\right\rfloor}"
    assert (
        S.cosine(0.1, 100).latex()
        == r"0.05 \left(1 + \cos{\left(\frac{\pi \min\left(t - 1, 100\right)}{100} \right)}\right)"
    )


def test_step_decay_jumps_at_the_right_step_for_every_step_size():
    # 49·(1/49) < 1 in floating point: a plain ⌊(t − 1)/s⌋ would jump a step late.
    for size in range(40, 60):
        schedule = S.step_decay(1.0, size, 0.5)
        for t in (size, size + 1, 2 * size, 2 * size + 1, 7 * size + 1):
            assert schedule(t) == 0.5 ** ((t - 1) // size), (size, t)


# PyTorch's scheduler for each schedule, stepped once after every optimizer step.
def _torch_schedulers(lr_scheduler):
    linear = lambda o, w: lr_scheduler.LinearLR(o, start_factor=1 / w, end_factor=1.0, total_iters=w - 1)  # noqa: E731
    return {
        "step_decay": (0.1, lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
        "exponential": (0.1, lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9)),
        "cosine": (0.1, lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.01)),
        "warmup": (0.1, lambda o: linear(o, 5)),
        "warmup_cosine": (
            0.2,
            lambda o: lr_scheduler.ChainedScheduler([linear(o, 4), lr_scheduler.CosineAnnealingLR(o, T_max=30)]),
        ),
    }


@pytest.mark.parametrize("name", ["step_decay", "exponential", "cosine", "warmup", "warmup_cosine"])
def test_rates_match_torch_schedulers(name):
    torch = pytest.importorskip("torch")
    lr, make_scheduler = _torch_schedulers(torch.optim.lr_scheduler)[name]
    weight = torch.nn.Parameter(torch.zeros(1))
    torch_opt = torch.optim.SGD([weight], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ChainedScheduler's note about its own step order
        scheduler = make_scheduler(torch_opt)
        schedule = SCHEDULES[name][0]()
        # Up to T + 1 steps: after it PyTorch's cosine rises again, ours stays at min_lr.
        for t in range(1, 22):
            assert schedule(t) == pytest.approx(torch_opt.param_groups[0]["lr"], rel=1e-12), t
            torch_opt.step()
            scheduler.step()


# -- optimizers with a schedule -----------------------------------------------------------------------
RNG = np.random.default_rng(0)
INITIAL = [RNG.normal(0, 0.5, shape) for shape in [(3, 4), (4,), (4, 2)]]
X, Y = RNG.normal(size=(6, 3)), RNG.normal(size=(6, 2))


def mlp(dtype="float64"):
    params = [sb.param(name, a.shape, init=a.copy(), dtype=dtype) for name, a in zip(["W1", "b1", "W2"], INITIAL)]
    x, y = sb.input("x", (None, 3), dtype), sb.input("y", (None, 2), dtype)
    W1, b1, W2 = params
    return params, sb.mse(sb.tanh(x @ W1 + b1) @ W2, y), (x, y)


def test_an_optimizer_with_a_schedule_reads_the_step_and_prints_it():
    opt = optim.Momentum(lr=S.step_decay(0.1, 10, 0.5), momentum=0.8)
    assert opt.uses_step and opt.symbols == (optim.w, optim.g, optim.v, optim.t)
    assert str(opt.formula()) == "η(t) = 0.1·0.5^⌊(t − 0.5)/10⌋\nv ← μ·v + g\nw ← w − η·v"
    assert opt.formula().latex().splitlines()[1].startswith(r"\eta(t) &= 0.1 \cdot 0.5^{")
    assert repr(opt) == "Momentum(lr=step_decay(lr=0.1, step_size=10, gamma=0.5), momentum=0.8, nesterov=False)"
    assert opt.update_rules()["w"].body.has(sympy.floor)
    assert [opt.learning_rate(t) for t in (10, 11)] == [0.1, 0.05]
    # A constant schedule is its number: no step input, the same rules as lr=0.05.
    constant = optim.SGD(lr=S.constant(0.05))
    assert not constant.uses_step and constant.lr == 0.05
    assert constant.update_rules() == optim.SGD(lr=0.05).update_rules()


def _train_with_graph(opt, steps):
    params, loss, (x, y) = mlp()
    new_values, new_states, state_inputs, step = opt.step_graph(params, sb.grad(loss, params))
    states = opt.init_states(params)
    for t in range(1, steps + 1):
        feeds = {x: X, y: Y, step: float(t), **{state_inputs[key]: value for key, value in states.items()}}
        values = sb.evaluate([*new_values.values(), *new_states.values()], feeds)
        for p, value in zip(new_values, values):
            p.value = value
        states = dict(zip(new_states, values[len(new_values) :]))
    return params


def _train_with_reference(opt, steps):
    params, loss, (x, y) = mlp()
    grads, states = sb.grad(loss, params), opt.init_states(params)
    for t in range(1, steps + 1):
        opt.reference_step(params, sb.evaluate(grads, {x: X, y: Y}), states, t)
    return params


SCHEDULED = {
    "sgd_step_decay": lambda: optim.SGD(lr=S.step_decay(0.2, 3, 0.5)),
    "momentum_cosine": lambda: optim.Momentum(lr=S.cosine(0.1, 8, 0.01), momentum=0.9, nesterov=True),
    "adam_warmup_exponential": lambda: optim.Adam(lr=S.warmup(S.exponential(0.05, 0.8), 3)),
    "adamw_cosine": lambda: optim.AdamW(lr=S.cosine(0.05, 6), weight_decay=0.1),
    "rmsprop_warmup": lambda: optim.RMSProp(lr=S.warmup(0.01, 4)),
}


@pytest.mark.parametrize("name", SCHEDULED)
def test_step_graph_follows_the_schedule_as_the_reference_step(name):
    graph, reference = _train_with_graph(SCHEDULED[name](), 10), _train_with_reference(SCHEDULED[name](), 10)
    for p, q in zip(graph, reference):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-12, atol=1e-14, err_msg=p.label)
    assert not np.allclose(graph[0].value, INITIAL[0])


TORCH_SCHEDULED = {  # ours, torch optimizer and its arguments, scheduler
    "sgd_step_decay": (
        lambda: optim.SGD(lr=S.step_decay(0.2, 3, 0.5)),
        ("SGD", {"lr": 0.2}),
        lambda L, o: L.StepLR(o, step_size=3, gamma=0.5),
    ),
    "momentum_exponential": (
        lambda: optim.Momentum(lr=S.exponential(0.1, 0.7), momentum=0.9),
        ("SGD", {"lr": 0.1, "momentum": 0.9}),
        lambda L, o: L.ExponentialLR(o, gamma=0.7),
    ),
    "adam_cosine": (
        lambda: optim.Adam(lr=S.cosine(0.05, 8, 0.005)),
        ("Adam", {"lr": 0.05}),
        lambda L, o: L.CosineAnnealingLR(o, T_max=8, eta_min=0.005),
    ),
}


@pytest.mark.parametrize("name", TORCH_SCHEDULED)
def test_training_matches_torch_with_its_scheduler(name):
    torch = pytest.importorskip("torch")
    make, (torch_name, torch_args), make_scheduler = TORCH_SCHEDULED[name]
    leaves = [torch.tensor(a, requires_grad=True) for a in INITIAL]
    torch_opt = getattr(torch.optim, torch_name)(leaves, **torch_args)
    scheduler = make_scheduler(torch.optim.lr_scheduler, torch_opt)
    W1, b1, W2 = leaves
    for _ in range(9):
        torch_opt.zero_grad()
        torch.nn.functional.mse_loss(torch.tanh(torch.tensor(X) @ W1 + b1) @ W2, torch.tensor(Y)).backward()
        torch_opt.step()
        scheduler.step()
    for p, leaf in zip(_train_with_graph(make(), 9), leaves):
        np.testing.assert_allclose(p.value, leaf.detach().numpy(), rtol=1e-10, atol=1e-13, err_msg=p.label)


@pytest.mark.parametrize(
    "name, dtype",
    [("sgd_step_decay", "float64"), ("momentum_cosine", "float32"), ("adam_warmup_exponential", "float64")],
)
def test_compiled_steps_follow_the_schedule(name, dtype):
    params, loss, (x, y) = mlp(dtype)
    twins, twin_loss, (tx, ty) = mlp(dtype)
    step = sb.compile_step(loss, [x, y], params, SCHEDULED[name]())
    reference = SCHEDULED[name]()
    grads, states = sb.grad(twin_loss, twins), reference.init_states(twins)
    # In float32, Adam's step on a gradient near zero is sensitive to rounding (as in PyTorch).
    tolerance = dict(rtol=1e-10, atol=1e-13) if dtype == "float64" else dict(rtol=2e-4, atol=1e-5)
    for t in range(1, 13):
        batch = slice(t % 3, t % 3 + 4)
        feeds = {tx: X[batch].astype(dtype), ty: Y[batch].astype(dtype)}
        reference.reference_step(twins, sb.evaluate(grads, feeds), states, t)
        step(X[batch], Y[batch])
        for p, q in zip(params, twins):
            np.testing.assert_allclose(p.value, q.value, **tolerance, err_msg=f"{p.label} at step {t}")


def test_the_native_epoch_loop_feeds_the_schedule_its_step_numbers():
    params, loss, (x, y) = mlp()
    twins, twin_loss, (tx, ty) = mlp()
    make = SCHEDULED["sgd_step_decay"]
    epoch = sb.compile_step(loss, [x, y], params, make())
    steps = sb.compile_step(twin_loss, [tx, ty], twins, make())
    for seed in range(3):
        epoch.epoch(X, Y, batch_size=2, seed=seed)
        order = np.random.default_rng(seed).permutation(len(X))
        for start in range(0, len(X), 2):
            steps(X[order[start : start + 2]], Y[order[start : start + 2]])
    assert epoch.steps == steps.steps == 9
    for p, q in zip(params, twins):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-13)


# -- the compiled expressions of t against NumPy ----------------------------------------------------------
@pytest.mark.parametrize("name", [name for name in SCHEDULES if name != "constant"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_schedule_expressions_match_python(name, dtype):
    schedule = SCHEDULES[name][0]()
    steps = sb.input("t", (None,), dtype)
    rates = apply(ScalarFunction("rate", (S.t,), schedule.body), steps)
    t = np.arange(1, 201, dtype=dtype)
    expected = np.array([schedule(int(k)) for k in t])
    # In float32 the rate is computed in float32: 0.95 itself is rounded, and so is 0.95^199.
    tolerance = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(sb.compile(rates, [steps])(t), expected, rtol=tolerance)
    np.testing.assert_allclose(sb.evaluate(rates, {steps: t}), expected, rtol=tolerance)


def test_compiled_floor_min_max_cos_and_piecewise_match_numpy():
    a, b = sb.input("a", (None,), "float64"), sb.input("b", (None,), "float64")
    u, v = S.t, sympy.Symbol("v", real=True)
    bodies = {
        "floor": (sympy.floor(u / 3 - v), lambda x, y: np.floor(x / 3 - y)),
        "ceiling": (sympy.ceiling(u * v), lambda x, y: np.ceil(x * y)),
        "min_max": (
            sympy.Min(u, v, 1) + sympy.Max(u, 2 * v),
            lambda x, y: np.minimum(np.minimum(x, y), 1) + np.maximum(x, 2 * y),
        ),
        "cos_sin": (sympy.cos(sympy.pi * u) * sympy.sin(v), lambda x, y: np.cos(np.pi * x) * np.sin(y)),
        "piecewise_and": (
            sympy.Piecewise((u, (u > 0) & (v > 0) & (u < v)), (v, u < -1), (0, True)),
            lambda x, y: np.where((x > 0) & (y > 0) & (x < y), x, np.where(x < -1, y, 0.0)),
        ),
        "piecewise_or": (
            sympy.Piecewise((u * v, (u > 1) | (v > 1) | (u < -1)), (1, True)),
            lambda x, y: np.where((x > 1) | (y > 1) | (x < -1), x * y, 1.0),
        ),
    }
    rng = np.random.default_rng(4)
    A, B = rng.uniform(-3, 3, 257), rng.uniform(-3, 3, 257)
    for name, (body, reference) in bodies.items():
        out = apply(ScalarFunction(name, (u, v), body), a, b)
        np.testing.assert_allclose(sb.compile(out, [a, b])(A, B), reference(A, B), rtol=1e-13, atol=1e-13, err_msg=name)


def test_cos_of_the_step_is_computed_once_per_step_not_per_element():
    x, y = sb.input("x", (None, 64)), sb.input("y", (None,))
    W = sb.param("W", (64,), init=np.ones(64, np.float32))
    step = sb.compile_step(sb.mse(x @ W, y), [x, y], [W], optim.SGD(lr=S.cosine(0.1, 20)))
    calls = [line for line in step.optimized_ir.splitlines() if "call" in line and "@cosf(" in line]
    assert len(calls) == 1  # hoisted out of the update loop, which is then vectorised


# -- bad arguments -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: S.constant(0), r"constant: lr must be > 0, got 0"),
        (lambda: S.step_decay(0.1, 0, 0.5), r"step_decay: step_size must be an int >= 1, got 0"),
        (lambda: S.step_decay(0.1, 2.5, 0.5), r"step_size must be an int >= 1, got 2.5"),
        (lambda: S.step_decay(0.1, 10, 1.5), r"step_decay: gamma must be in \(0, 1\], got 1.5"),
        (lambda: S.exponential(0.1, 0), r"exponential: gamma must be > 0, got 0"),
        (lambda: S.exponential(float("nan"), 0.5), r"exponential: lr must be a finite number, got nan"),
        (lambda: S.cosine(0.1, 10, min_lr=0.2), r"cosine: min_lr must be < lr, got min_lr=0.2 and lr=0.1"),
        (lambda: S.cosine(0.1, 10, min_lr=-0.1), r"cosine: min_lr must be >= 0, got -0.1"),
        (lambda: S.warmup(0.1, 0), r"warmup: warmup_steps must be an int >= 1, got 0"),
        (lambda: S.warmup("fast", 3), r"warmup: lr must be a finite number, got 'fast'"),
        (lambda: S.Schedule(sympy.Symbol("n") * 0.1), r"uses \['n'\]; a schedule may use only the step number"),
        (lambda: S.Schedule(S.t - 1), r"gives the rate 0.0 at t = 1; expected a finite rate > 0"),
        (lambda: S.exponential(0.1, 0.5) * None, r"unsupported operand"),
        (lambda: S.exponential(0.1, 0.5) * -2, r"Schedule \*: factor must be > 0, got -2"),
        (lambda: S.exponential(0.1, 0.5)(0), r"the step number must be an int >= 1, got 0"),
        (lambda: S.exponential(0.1, 0.5)(2.5), r"the step number must be an int >= 1, got 2.5"),
        (lambda: S.Schedule(1 / (S.t - 2) + 2)(2), r"cannot evaluate the rate at t = 2"),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises((sb.GraphError, TypeError), match=message):
        make()


def test_a_scheduled_optimizer_needs_the_step_number():
    assert issubclass(S.ScheduleError, sb.GraphError) and issubclass(S.ScheduleError, ValueError)
    W = sb.param("W", (2,))
    opt = optim.SGD(lr=S.exponential(0.1, 0.5))
    with pytest.raises(sb.GraphError, match=r"SGD.reference_step: t must be the step number \(an int >= 1\), got None"):
        opt.reference_step([W], [np.ones(2)], {})
    assert opt.step_graph([W], [sb.input("gW", (2,))]).step_input.shape == ()
