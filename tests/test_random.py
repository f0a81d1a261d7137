"""Counter-based random numbers: the hash, its distribution, and compiled code bit for bit equal
to the reference evaluator."""

import numpy as np
import pytest

import symbackprop as sb
from symbackprop.random import GAMMA, MASK, mix64, stream_base, uniform_values

SHAPES = [(1,), (3,), (17,), (2, 3, 5), (None,), (None, 3), (None, 129)]
COUNTERS = [0.0, 1.0, 2.0, 7.0, -3.0, 2.5, 1e30, np.inf, np.nan]


def test_the_mixer_is_splitmix64():
    # splitmix64 seeded with 0: its published first outputs.
    outputs = [mix64(k * GAMMA & MASK) for k in range(1, 5)]
    assert outputs == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]


def test_numpy_wrapping_arithmetic_equals_exact_integer_arithmetic():
    bits = int(np.float64(5.0).view(np.uint64))
    base = stream_base(11, bits)
    exact = [mix64((base + i * GAMMA) & MASK) >> 11 for i in range(40)]
    values = uniform_values((40,), "float64", seed=11, counter=5.0)
    np.testing.assert_array_equal(values, np.array(exact, dtype=np.float64) * 2.0**-53)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_compiled_values_equal_the_evaluator_bit_for_bit(shape, dtype):
    # x only gives shapes with None their batch size
    x, step = sb.input("x", (None,)), sb.step_number()
    u = sb.random_uniform(shape, seed=3, dtype=dtype)
    compiled = sb.compile([u, x], inputs=[x, step])
    for batch in (1, 4):
        for counter in (1.0, 2.0, np.nan):
            feed = np.zeros(batch)
            got, _ = compiled(feed, counter)
            expected, _ = sb.evaluate([u, x], {x: feed, step: counter})
            assert got.dtype == expected.dtype == dtype
            assert got.shape == expected.shape
            np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), expected.view(f"u{got.itemsize}"))


@pytest.mark.parametrize("counter_dtype", ["float32", "float64"])
def test_any_counter_value_hashes_the_same_compiled(counter_dtype):
    c = sb.input("c", (), counter_dtype)
    u = sb.random_uniform((2, 9), seed=2**64 - 1, counter=c, dtype="float64")
    compiled = sb.compile(u, inputs=[c])
    for counter in COUNTERS:
        value = np.asarray(counter, dtype=counter_dtype)
        np.testing.assert_array_equal(compiled(value), sb.evaluate(u, {c: value}))


def test_float32_values_are_the_float64_values_truncated():
    u64 = uniform_values((1000,), "float64", seed=5, counter=3.0)
    u32 = uniform_values((1000,), "float32", seed=5, counter=3.0)
    np.testing.assert_array_equal(u32, (np.floor(u64 * 2**24) / 2**24).astype(np.float32))
    # so thresholds that float32 holds exactly draw the same mask in both precisions
    for rate in (0.5, 0.25, 0.125):
        np.testing.assert_array_equal(u32 >= np.float32(rate), u64 >= rate)


def test_rows_do_not_depend_on_the_batch_size():
    np.testing.assert_array_equal(
        uniform_values((2, 5), "float32", 1, 4.0), uniform_values((7, 5), "float32", 1, 4.0)[:2]
    )


def test_values_are_uniform_on_the_unit_interval():
    values = uniform_values((200_000,), "float64", seed=123, counter=1.0)
    assert values.min() >= 0.0 and values.max() < 1.0
    # the mean of n uniforms has standard deviation 1/sqrt(12 n): within 4 of them
    assert abs(values.mean() - 0.5) < 4 / np.sqrt(12 * values.size)
    # chi-square over 50 equal bins; 49 degrees of freedom, 99.9th percentile 85.35
    counts = np.bincount((values * 50).astype(int), minlength=50)
    expected = values.size / 50
    assert ((counts - expected) ** 2 / expected).sum() < 85.35
    # neighbours (the same stream) and the same element one step later are uncorrelated
    later = uniform_values((200_000,), "float64", seed=123, counter=2.0)
    bound = 4 / np.sqrt(values.size)
    assert abs(np.corrcoef(values[:-1], values[1:])[0, 1]) < bound
    assert abs(np.corrcoef(values, later)[0, 1]) < bound


def test_pairs_fill_the_unit_square_evenly():
    # consecutive pairs in a 10x10 grid: 99 degrees of freedom, 99.9th percentile 148.23
    values = uniform_values((200_000,), "float32", seed=9, counter=1.0).reshape(-1, 2)
    cells = (values[:, 0] * 10).astype(int) * 10 + (values[:, 1] * 10).astype(int)
    counts = np.bincount(cells, minlength=100)
    expected = len(values) / 100
    assert ((counts - expected) ** 2 / expected).sum() < 148.23


def test_different_steps_and_seeds_draw_different_numbers():
    draws = [uniform_values((1000,), "float32", seed, step) for seed in (0, 1, 2) for step in (1.0, 2.0, 3.0)]
    for i, a in enumerate(draws):
        for b in draws[i + 1 :]:
            assert np.mean(a == b) < 0.01
    np.testing.assert_array_equal(draws[0], uniform_values((1000,), "float32", 0, 1.0))


def test_equal_arguments_are_one_node_and_other_seeds_are_not():
    step = sb.step_number()
    u = sb.random_uniform((None, 4), seed=1)
    assert sb.random_uniform((None, 4), seed=1, counter=step) is u
    assert sb.random_uniform((None, 4), seed=2) is not u
    assert sb.random_uniform((None, 4), seed=1, counter=3.0) is not u
    assert sb.random_uniform((None, 4), seed=1, dtype="float64") is not u
    assert u.inputs == (step,) and step is sb.input("step", (), "float64")


def test_text_form_verify_and_formula():
    x = sb.input("x", (None, 2))
    y = x * sb.random_uniform((None, 2), seed=3)
    sb.verify(y)
    assert "random_uniform[shape=(n, 2), dtype=float32, seed=3] step" in sb.to_text(y)
    assert str(sb.formula(y)) == "y = x ⊙ U(seed 3, step)"
    assert "U_{3}" in sb.formula(y).latex()


def test_no_gradient_flows_to_the_counter_and_the_draw_scales_the_gradient():
    x, c = sb.input("x", (None, 3), "float64"), sb.input("c", (), "float64")
    u = sb.random_uniform((None, 3), seed=4, counter=c * 2.0, dtype="float64")
    loss = (sb.tanh(x) * u).sum()
    feeds = {x: np.linspace(-1, 1, 12).reshape(4, 3), c: 1.5}
    gx, gc = sb.grad(loss, [x, c])
    np.testing.assert_array_equal(sb.evaluate(gc, feeds), 0.0)
    gx_value, u_value = sb.evaluate([gx, u + 0.0 * x], feeds)
    np.testing.assert_allclose(gx_value, (1 - np.tanh(feeds[x]) ** 2) * u_value, rtol=1e-12)
    sb.check_grads(loss, [x], feeds)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: sb.random_uniform((2,), seed=-1), r"seed must be an int in \[0, 2\*\*64\), got -1"),
        (lambda: sb.random_uniform((2,), seed=2**64), "seed must be an int"),
        (lambda: sb.random_uniform((2,), seed=1.0), "seed must be an int"),
        (lambda: sb.random_uniform((2,), seed=True), "seed must be an int"),
        (lambda: sb.random_uniform((2,), seed=0, dtype="int64"), "dtype 'int64' is not one of"),
        (lambda: sb.random_uniform((0,), seed=0), "shape"),
        (lambda: sb.random_uniform((2,), 0, counter=sb.input("c", (2,))), r"counter c \(2,\) float32 must be a float"),
        (lambda: sb.random_uniform((2,), 0, counter=sb.input("k", (), "int64")), "must be a float scalar"),
        (lambda: sb.random_uniform((2,), 0, counter="step"), "counter must be a float scalar tensor or a number"),
    ],
)
def test_bad_arguments_are_refused(build, message):
    with pytest.raises(sb.GraphError, match=message):
        build()


def test_the_expanded_formula_refuses_a_draw_over_symbols():
    x = sb.input("x", (None, 2))
    with pytest.raises(sb.GraphError, match="cannot be written out over symbols"):
        sb.formula(x * sb.random_uniform((None, 2), seed=1), expand=True)


def test_the_step_number_must_be_fed_outside_a_training_step():
    x = sb.input("x", (None, 2))
    y = x * sb.random_uniform((None, 2), seed=0)
    with pytest.raises(sb.GraphError, match=r"no value fed for the input\(s\) \['step'\]"):
        sb.evaluate(y, {x: np.ones((1, 2))})
    with pytest.raises(sb.GraphError, match=r"need the input\(s\) \['step'\]"):
        sb.compile(y, inputs=[x])
    compiled = sb.compile(y, inputs=[x, sb.step_number()])
    np.testing.assert_array_equal(compiled(np.ones((1, 2)), 5.0), sb.evaluate(y, {x: np.ones((1, 2)), "step": 5}))


def test_the_kernel_program_shows_the_draw():
    u = sb.random_uniform((3,), seed=8)
    assert "random-uniform out0[3] = U(seed 8, step[])" in sb.compile(u, inputs=[sb.step_number()]).kernel_ir
