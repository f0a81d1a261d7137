"""Small products read in place (no packing) against NumPy and against the packed path."""

import ctypes
import dataclasses
import mmap
import sys

import llvmlite.ir as ir
import numpy as np
import pytest

from codegen.matmul import MatmulConfig, MatmulKernels, emit_matmul, matmul_config

DTYPES = ["float32", "float64"]
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]

# Rows of every tile height (M mod 6 from 0 to 5 on AVX2), columns narrower than, equal to
# and past one tile, one column (the output layer of a regression), K = 1 and K = 0; K a
# multiple of the lanes and not (op(B) = Bᵀ is transposed by whole blocks of lanes, then
# one k at a time).
SHAPES = [
    (32, 10, 64),
    (32, 64, 10),
    (64, 10, 32),
    (32, 1, 16),
    (32, 16, 16),
    (7, 17, 3),
    (13, 16, 1),
    (5, 33, 2),
    (1, 1, 1),
    (11, 40, 19),
]


@pytest.fixture(scope="module", params=DTYPES)
def pair(request):
    """The host's kernels (small products direct) and the same kernels packing every product."""
    cfg = matmul_config(request.param)
    assert cfg.direct_volume >= 64 * 64 * 64
    return MatmulKernels(request.param), MatmulKernels(request.param, config=dataclasses.replace(cfg, direct_volume=0))


def _operands(m, n, k, trans_a, trans_b, dtype, seed, pad=0):
    """op(a) is m x k and op(b) k x n; ``pad`` extra columns make the row strides longer than a row."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m + pad) if trans_a else (m, k + pad)).astype(dtype)
    b = rng.standard_normal((n, k + pad) if trans_b else (k, n + pad)).astype(dtype)
    a = a[:, :m] if trans_a else a[:, :k]
    b = b[:, :k] if trans_b else b[:, :n]
    return a, b


def _reference(a, b, trans_a, trans_b):
    return (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)


@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_small_products_match_numpy_and_the_packed_path(pair, m, n, k, trans_a, trans_b):
    direct, packed = pair
    a, b = _operands(m, n, k, trans_a, trans_b, direct.dtype, seed=m * n + k, pad=3)
    tolerance = 1e-5 if direct.dtype == np.float32 else 1e-12
    results = []
    for kernels in (direct, packed):
        c = np.full((m, n), np.nan, direct.dtype)  # not accumulating: the old contents are never read
        kernels(a, b, c, trans_a=trans_a, trans_b=trans_b)
        np.testing.assert_allclose(c, _reference(a, b, trans_a, trans_b), rtol=tolerance, atol=tolerance * (k + 1))
        results.append(c)
    # Within one cache block both paths add each element's terms in the same order.
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("m,n,k", [(32, 10, 64), (7, 17, 3), (6, 16, 0)])
def test_small_products_accumulate_into_a_strided_output(pair, m, n, k):
    direct, _ = pair
    a, b = _operands(m, n, k, False, False, direct.dtype, seed=5)
    base = np.random.default_rng(6).standard_normal((m, n + 5)).astype(direct.dtype)
    c = base.copy()
    direct(a, b, c[:, :n], accumulate=True)
    expected = base[:, :n].astype(np.float64) + _reference(a, b, False, False)
    np.testing.assert_allclose(c[:, :n], expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(c[:, n:], base[:, n:])  # columns past the product are untouched


def test_zero_inner_dimension_zeroes_the_output(pair):
    direct, _ = pair
    c = np.full((5, 9), np.nan, direct.dtype)
    direct(np.empty((5, 0), direct.dtype), np.empty((0, 9), direct.dtype), c)
    np.testing.assert_array_equal(c, 0)


def test_wider_tile_configuration_reads_in_place():
    # The AVX-512 layout (12 x 2 vectors of 16 lanes), run on any host, with every product
    # within its direct limits (K <= kc, M <= mc): tile heights of 4, 8 and 12 rows and
    # masked column edges.
    cfg = MatmulConfig("float32", lanes=16, mr=12, nr_vectors=2, kc=32, mc=24, nc=64, unroll=3, direct_volume=10**6)
    mm = MatmulKernels("float32", config=cfg)
    for trans_a, trans_b in TRANSPOSES:
        for m, n, k in [(23, 37, 30), (12, 32, 16), (3, 1, 5)]:
            a, b = _operands(m, n, k, trans_a, trans_b, "float32", seed=m + n + k)
            c = np.full((m, n), np.nan, np.float32)
            mm(a, b, c, trans_a=trans_a, trans_b=trans_b)
            np.testing.assert_allclose(c, _reference(a, b, trans_a, trans_b), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("direct_volume", [0, 4096])
def test_direct_tiles_are_emitted_only_where_they_apply(direct_volume):
    # op(B) = Bᵀ packs one strip of B at a time into a zero-padded panel and reads it with
    # the same kernels as B in place, whole rows wide.
    cfg = dataclasses.replace(matmul_config("float32"), direct_volume=direct_volume)
    emitted = []
    for trans_b in (False, True):
        module = ir.Module()
        emit_matmul(module, "mm", "float32", False, trans_b, cfg)
        emitted.append({name for name in module.globals if name.startswith("matmul.direct.")})
    assert emitted[0] == emitted[1]
    assert bool(emitted[0]) == bool(direct_volume)


@pytest.mark.parametrize("m,n,k", [(97, 16, 8), (8, 16, 385), (64, 64, 65)])
def test_products_past_the_direct_limits_pack_and_stay_correct(pair, m, n, k):
    # More rows than MC, a deeper K than KC, or a volume past the limit: the packed loops.
    direct, packed = pair
    a, b = _operands(m, n, k, False, False, direct.dtype, seed=3)
    c, d = direct(a, b), packed(a, b)
    np.testing.assert_array_equal(c, d)
    np.testing.assert_allclose(c, _reference(a, b, False, False), rtol=1e-4, atol=1e-4 * k)


def test_negative_direct_volume_is_refused():
    with pytest.raises(ValueError, match="direct_volume must be a non-negative integer"):
        dataclasses.replace(matmul_config("float32"), direct_volume=-1)


_PROT_NONE = 0  # mprotect's "no access" (the mmap module names only the other flags)


def _before_a_guard_page(x: np.ndarray, keep: list) -> np.ndarray:
    """A copy of the C-contiguous ``x`` whose last byte is followed by an unreadable page."""
    page = mmap.PAGESIZE
    size = -(-x.nbytes // page) * page
    region = mmap.mmap(-1, size + page)
    base = np.frombuffer(region, np.uint8)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    assert libc.mprotect(base.ctypes.data + size, page, _PROT_NONE) == 0
    keep += [region, base]
    copy = base[size - x.nbytes : size].view(x.dtype).reshape(x.shape)
    copy[...] = x
    return copy


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs mprotect")
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
@pytest.mark.parametrize("m,n,k", [(7, 17, 3), (32, 1, 16), (13, 33, 9), (1, 5, 1)])
def test_small_products_read_nothing_past_their_operands(pair, m, n, k, trans_a, trans_b):
    # Each operand ends where an unreadable page begins: a load past its last element
    # (a whole vector over a short row, a tile's rows past M) would fault.
    direct, packed = pair
    keep: list = []
    a, b = (_before_a_guard_page(x, keep) for x in _operands(m, n, k, trans_a, trans_b, direct.dtype, seed=k))
    c = direct(a, b, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_array_equal(c, packed(a, b, trans_a=trans_a, trans_b=trans_b))
