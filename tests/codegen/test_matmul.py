"""The matmul kernel against NumPy: every transposition, both dtypes, edge shapes, strides, errors."""

import re

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import pytest

from codegen.jit import compile_ir
from codegen.matmul import MatmulConfig, MatmulKernels, emit_matmul, matmul_config, matmul_workspace_size
from codegen.target import TargetSpec, emit_assembly, host_spec, optimize, target_machine, vector_features

DTYPES = ["float32", "float64"]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]


def _block_edges() -> list[tuple[int, int, int]]:
    """Sizes just past the host's cache blocks (KC, MC) of either dtype, and two K blocks."""
    shapes = set()
    for dtype in DTYPES:
        cfg = matmul_config(dtype)
        shapes |= {(7, 17, cfg.kc + 1), (cfg.mc + 1, 19, 20), (40, 45, 2 * cfg.kc + 8)}
    return sorted(shapes)


# (M, N, K): odd sizes, single rows and columns, K = 1, whole tiles (6 x 16 on AVX2),
# every height of the last row tile (M mod 6 from 0 to 5), and sizes straddling the cache
# blocks with a tile edge inside them.
SHAPES = [
    (1, 1, 1),
    (2, 5, 9),
    (3, 3, 3),
    (128, 20, 30),
    (17, 17, 17),
    (129, 129, 129),
    (1, 17, 3),
    (17, 1, 129),
    (5, 33, 1),
    (12, 32, 8),
    *_block_edges(),
]


@pytest.fixture(scope="module", params=DTYPES)
def kernels(request):
    return MatmulKernels(request.param)


def _operands(m, n, k, trans_a, trans_b, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def _check(c, a, b, trans_a, trans_b, c0=None):
    """Compare with a float64 product; the tolerance grows with K as rounding errors do."""
    op_a = (a.T if trans_a else a).astype(np.float64)
    op_b = (b.T if trans_b else b).astype(np.float64)
    expected = op_a @ op_b
    scale = np.abs(op_a) @ np.abs(op_b)
    if c0 is not None:
        expected += c0
        scale += np.abs(c0)
    eps = np.finfo(c.dtype).eps
    k = op_a.shape[1]
    # Each of the K fused multiply-adds rounds once: |error| <= K eps sum |a||b|, with
    # slack for the final addition of C; the typical error is about sqrt(K) eps.
    tolerance = (k + 2) * eps * scale + np.finfo(c.dtype).tiny
    excess = np.abs(c - expected) - tolerance
    assert excess.max(initial=-1) <= 0, f"max error {np.abs(c - expected).max()} beyond K-scaled tolerance"
    # Typical rounding: errors of about sqrt(K) eps relative to the largest |a||b| sum.
    assert np.abs(c - expected).max(initial=0) <= 4 * eps * np.sqrt(k) * scale.max(initial=0)


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_product_matches_numpy(kernels, m, n, k, trans_a, trans_b):
    a, b = _operands(m, n, k, trans_a, trans_b, kernels.dtype, seed=m * 1000 + n + k)
    # NaN in the output checks that plain (non-accumulating) products never read C.
    c = np.full((m, n), np.nan, kernels.dtype)
    kernels(a, b, c, trans_a=trans_a, trans_b=trans_b)
    _check(c, a, b, trans_a, trans_b)


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (17, 33, 3), (129, 17, 400)])
def test_accumulate_adds_to_output(kernels, m, n, k, trans_a, trans_b):
    a, b = _operands(m, n, k, trans_a, trans_b, kernels.dtype, seed=7)
    c0 = np.random.default_rng(1).standard_normal((m, n)).astype(kernels.dtype)
    c = c0.copy()
    kernels(a, b, c, trans_a=trans_a, trans_b=trans_b, accumulate=True)
    _check(c, a, b, trans_a, trans_b, c0.astype(np.float64))


@pytest.mark.parametrize("trans_a, trans_b", TRANSPOSES)
@pytest.mark.parametrize("m, n, k", [(3, 5, 7), (20, 37, 19), (131, 70, 400)])
def test_submatrix_views_with_large_strides(kernels, m, n, k, trans_a, trans_b):
    a_full, b_full = _operands(m + 5, n + 9, k + 7, trans_a, trans_b, kernels.dtype, seed=3)
    # Offsets of one element leave the views aligned only to their element size.
    a = a_full[1 : 1 + (k if trans_a else m), 2 : 2 + (m if trans_a else k)]
    b = b_full[3 : 3 + (n if trans_b else k), 1 : 1 + (k if trans_b else n)]
    big = np.full((m + 4, n + 6), 99.0, kernels.dtype)
    c = big[2 : 2 + m, 1 : 1 + n]
    kernels(a, b, c, trans_a=trans_a, trans_b=trans_b)
    _check(c, a, b, trans_a, trans_b)
    outside = np.ones(big.shape, bool)
    outside[2 : 2 + m, 1 : 1 + n] = False
    assert (big[outside] == 99.0).all(), "the kernel wrote outside its output view"


@pytest.mark.parametrize("accumulate", [False, True])
def test_empty_inner_dimension_zeroes_or_keeps_output(kernels, accumulate):
    a, b = np.empty((4, 0), kernels.dtype), np.empty((0, 6), kernels.dtype)
    c = np.full((4, 6), 2.5, kernels.dtype)
    kernels(a, b, c, accumulate=accumulate)
    np.testing.assert_array_equal(c, 2.5 if accumulate else 0.0)


def test_empty_output_is_a_no_op(kernels):
    out = kernels(np.empty((0, 3), kernels.dtype), np.ones((3, 5), kernels.dtype))
    assert out.shape == (0, 5)


def test_native_function_ignores_non_positive_sizes(kernels):
    # Generated code calls the kernel directly; degenerate sizes must neither crash nor write.
    fn = kernels.functions[False, False]
    c = np.full((2, 2), 5.0, kernels.dtype)
    work = kernels.workspace(2, 2, 2)
    for m, n, k in [(-1, 2, 2), (2, -3, 2), (0, 0, 0)]:
        fn(m, n, k, 0, 2, 0, 2, c.ctypes.data, 2, 0, work.ctypes.data)
    np.testing.assert_array_equal(c, 5.0)
    fn(2, 2, -4, 0, 2, 0, 2, c.ctypes.data, 2, 0, work.ctypes.data)
    np.testing.assert_array_equal(c, 0.0)


def test_threads_sharing_one_object_get_right_results(kernels):
    from concurrent.futures import ThreadPoolExecutor

    cases = [_operands(m, m + 3, 40 + m, False, False, kernels.dtype, seed=m) for m in (20, 50, 90, 130)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda ab: kernels(*ab), cases * 3))
    for (a, b), c in zip(cases * 3, results):
        _check(c, a, b, False, False)


def test_wide_output_crosses_the_column_block():
    # N past NC = 4096 (a second packed block of B); M and K small to stay fast.
    mm = MatmulKernels("float32")
    a, b = _operands(3, mm.config.nc + 21, 5, False, False, "float32", seed=11)
    _check(mm(a, b), a, b, False, False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_other_tile_configuration_is_correct(dtype):
    # The AVX-512 layout (12 x 2 vectors of 16 or 8 lanes) with small blocks, run on any host
    # (LLVM splits the wide vectors): exercises tile, block and transpose edges of other widths.
    lanes = 16 if dtype == "float32" else 8
    cfg = MatmulConfig(dtype, lanes=lanes, mr=12, nr_vectors=2, kc=2 * lanes, mc=24, nc=4 * lanes, unroll=3)
    mm = MatmulKernels(dtype, config=cfg)
    for trans_a, trans_b in TRANSPOSES:
        for m, n, k in [(25, 2 * cfg.nr + 5, 3 * cfg.kc + 5), (12, 32, 16), (1, 1, 1)]:
            a, b = _operands(m, n, k, trans_a, trans_b, dtype, seed=m + n + k)
            c = np.full((m, n), np.nan, dtype)
            mm(a, b, c, trans_a=trans_a, trans_b=trans_b)
            _check(c, a, b, trans_a, trans_b)


def _hottest_block(assembly: str) -> list[str]:
    """The basic block of the assembly with the most FMA instructions (the k loop)."""
    blocks, current = [], []
    for line in assembly.splitlines():
        if re.match(r"^[.\w]+:", line):
            blocks.append(current)
            current = []
        current.append(line)
        if re.match(r"^\s+j\w+\s", line):
            blocks.append(current)
            current = []
    blocks.append(current)
    return max(blocks, key=lambda block: sum("vfmadd" in line for line in block))


def _check_register_blocking(assembly: str, cfg: MatmulConfig, register: str) -> None:
    loop = _hottest_block(assembly)
    fmas = [line.split() for line in loop if "vfmadd231p" in line]
    assert len(fmas) == cfg.mr * cfg.nr_vectors * cfg.unroll
    assert all(f"%{register}" in fma[-1] for fma in fmas)
    # Every accumulator has its own register and nothing goes to or from the stack.
    assert len({fma[-1] for fma in fmas}) == cfg.mr * cfg.nr_vectors
    assert not any("%rsp" in line for line in loop)


def test_micro_kernel_keeps_accumulators_in_host_registers():
    spec = host_spec()
    if "+fma" not in spec.features.split(",") or spec.vector_bits < 256:
        pytest.skip("host has no AVX and FMA")
    module = ir.Module()
    emit_matmul(module, "mm", "float32", False, False)
    register = "zmm" if spec.vector_bits == 512 else "ymm"
    _check_register_blocking(compile_ir(module).assembly, matmul_config("float32"), register)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_tile_is_register_blocked(dtype):
    # Assembly for another CPU can be generated (not run) on any x86-64 host.
    if not host_spec().triple.startswith("x86_64"):
        pytest.skip("x86-64 only")
    features = vector_features("+avx,+avx2,+fma,+avx512f,+avx512vl,+avx512bw,+avx512dq")
    spec = TargetSpec(host_spec().triple, "skylake-avx512", features)
    cfg = matmul_config(dtype, spec)
    assert (cfg.mr, cfg.nr) == (12, 32 if dtype == "float32" else 16)
    module = ir.Module()
    emit_matmul(module, "mm", dtype, False, False, cfg)
    module_ref = llvm.parse_assembly(str(module))
    machine = target_machine(spec)
    optimize(module_ref, machine=machine)
    _check_register_blocking(emit_assembly(module_ref, machine), cfg, "zmm")


def test_workspace_size_covers_the_packed_blocks():
    cfg = matmul_config("float32")
    small = matmul_workspace_size(1, 1, 1, "float32")
    assert small >= cfg.mr + cfg.nr
    big = matmul_workspace_size(10**6, 10**6, 10**6, "float32")
    assert big == matmul_workspace_size(2 * 10**6, 2 * 10**6, 2 * 10**6, "float32")
    assert big >= cfg.mc * cfg.kc + cfg.kc * cfg.nc
    with pytest.raises(ValueError, match="m must be a non-negative integer"):
        matmul_workspace_size(-1, 2, 3, "float32")
    with pytest.raises(TypeError, match="float32 or float64"):
        matmul_workspace_size(1, 2, 3, "int32")


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda d: (np.ones((2, 3), "float16"), np.ones((3, 4), d), None), TypeError, "a must have dtype"),
        (lambda d: (np.ones((2, 3), d), np.ones((4, 4), d), None), ValueError, "inner dimensions differ"),
        (lambda d: (np.ones((2, 3, 1), d), np.ones((3, 4), d), None), ValueError, "a must be 2-D"),
        (lambda d: (np.ones((2, 6), d)[:, ::2], np.ones((3, 4), d), None), ValueError, "contiguous rows"),
        (lambda d: (np.ones((2, 3), d), np.ones((3, 4), d), np.ones((2, 5), d)), ValueError, "out must have shape"),
        (lambda d: ([[1.0]], np.ones((1, 1), d), None), TypeError, "a must be a numpy.ndarray"),
    ],
)
def test_bad_arguments_raise_before_native_code(kernels, make, error, message):
    a, b, out = make(kernels.dtype)
    with pytest.raises(error, match=message):
        kernels(a, b, out)


def test_output_overlapping_an_input_or_read_only_is_refused(kernels):
    x = np.ones((4, 4), kernels.dtype)
    with pytest.raises(ValueError, match="share memory with a"):
        kernels(x, np.ones((4, 4), kernels.dtype), x)
    frozen = np.zeros((4, 4), kernels.dtype)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        kernels(x, x.copy(), frozen)
    with pytest.raises(ValueError, match="needs an out array"):
        kernels(x, x, accumulate=True)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="multiples"):
        MatmulConfig("float32", lanes=8, mr=6, nr_vectors=2, kc=100, mc=150, nc=4096)
    cfg = matmul_config("float32")
    with pytest.raises(ValueError, match="config is for float32"):
        emit_matmul(ir.Module(), "mm", "float64", False, False, cfg)
