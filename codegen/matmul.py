"""Matrix multiplication ``C = op(A) op(B)`` (or ``C += ...``) emitted as LLVM IR.

The kernel follows the layout of GotoBLAS and BLIS:

- A register-blocked *micro-kernel* computes an ``MR x NR`` tile of C with ``MR * NR/W``
  vector accumulators held in registers (``W`` lanes per vector). Each step of the k loop
  loads ``NR/W`` vectors of a row of B, broadcasts ``MR`` scalars of A and issues
  ``MR * NR/W`` fused multiply-adds. On AVX2 (16 registers) the tile is 6 x 16 float32
  (12 accumulators, 2 B vectors, 1 broadcast); with AVX-512 (32 registers) it is 12 x 32.
- ``op(B)`` is copied (*packed*) a ``KC x NC`` block at a time into panels of NR columns,
  row after row, so that the micro-kernel reads it as a contiguous, aligned stream that
  stays in the L1 cache; ``op(A)`` is packed an ``MC x KC`` block at a time into panels of
  MR rows, column after column, which stay in L2. Packing also pads the edges with zeros,
  so a micro-kernel always runs a whole tile and only its stores are cut to the matrix.
  The last rows of a block use shorter tiles (a third and two thirds of MR), which need
  less time than a full tile.
- The loops around the micro-kernel block N by NC, K by KC and M by MC, so that each
  packed block is reused from the cache level it was sized for.

The scratch memory for the packed blocks is a caller-provided workspace (see
`matmul_workspace_size`): the kernel never allocates.
"""

from __future__ import annotations

import ctypes
import numbers
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import llvmlite.ir as ir

from codegen.builder import FoldingBuilder
from codegen.jit import compile_ir
from codegen.loops import FLOAT_DTYPES, float_dtype_name, llvm_float_type, set_loop_hints
from codegen.target import TargetSpec, host_spec

if TYPE_CHECKING:  # NumPy is imported where it is used: the kernel library's helper does not need it
    import numpy as np

__all__ = [
    "MatmulConfig",
    "matmul_config",
    "matmul_workspace_size",
    "matmul_function_type",
    "emit_matmul",
    "KERNEL_PARTS",
    "kernel_parts",
    "emit_kernel_part",
    "transpose_block",
    "MatmulKernels",
]

_I1 = ir.IntType(1)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VOID = ir.VoidType()

# Packed blocks start on a cache-line boundary; the workspace is over-allocated by one line.
_ALIGN = 64
# Names of the packed-panel micro-kernels start with this. Their IR is already what should
# run (accumulators as phis, one FMA per vector and step), so the library compiles them
# without optimisation passes: LLVM's pipeline spent a third of the library's compile time
# on them and the code ran no faster (64-128 square products, measured within noise).
MICRO_KERNEL_PREFIX = "matmul.kernel."
# Names of the kernels on unpacked operands start with this. They step their own pointers
# through A and B, so they too are compiled as they are written: LLVM's per-function
# pipeline took 0.11 s of a float32 library's LLVM time on them, and without it small
# products and the steps that use them ran as fast (16 to 96, all transpositions; tiny,
# deep and mnist steps 0.98-1.01 of the time, six alternate processes).
DIRECT_KERNEL_PREFIX = "matmul.direct."


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class MatmulConfig:
    """Tile and block sizes of the kernel for one dtype and vector width.

    Parameters
    ----------
    dtype : str
        ``"float32"`` or ``"float64"``.
    lanes : int
        Elements per SIMD vector.
    mr : int
        Rows of the micro-kernel's tile of C.
    nr_vectors : int
        Vectors per row of the tile; the tile is ``mr x (nr_vectors * lanes)``.
    kc, mc, nc : int
        Cache blocks: depth of a packed panel, rows of a packed block of A, columns of a
        packed block of B. ``mc`` is a multiple of ``mr``, ``nc`` of ``nr``.
    unroll : int
        Steps of the micro-kernel's k loop per iteration.
    direct_volume : int
        Products with ``M * N * K`` up to this, ``K <= kc`` and ``M <= mc`` skip the blocked
        loops: the tiles read A where it lies, and B too unless ``op(B) = Bᵀ``, whose strips
        of NR columns are packed one at a time. 0 packs every product.
    """

    dtype: str
    lanes: int
    mr: int
    nr_vectors: int
    kc: int
    mc: int
    nc: int
    unroll: int = 4
    direct_volume: int = 0

    def __post_init__(self) -> None:
        llvm_float_type(self.dtype)
        sizes = (self.lanes, self.mr, self.nr_vectors, self.kc, self.mc, self.nc, self.unroll)
        if not all(isinstance(v, int) and v >= 1 for v in sizes) or self.lanes & (self.lanes - 1):
            raise ValueError(f"sizes must be positive integers and lanes a power of two: {self}")
        if not isinstance(self.direct_volume, int) or self.direct_volume < 0:
            raise ValueError(f"direct_volume must be a non-negative integer: {self}")
        if self.kc % self.lanes or self.mc % self.mr or self.nc % self.nr:
            raise ValueError(f"kc, mc and nc must be multiples of lanes, mr and nr: {self}")

    @property
    def nr(self) -> int:
        """Columns of the micro-kernel's tile."""
        return self.nr_vectors * self.lanes

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return FLOAT_DTYPES[self.dtype][1]

    @property
    def vector_bytes(self) -> int:
        """Bytes per SIMD vector, the alignment of packed B rows."""
        return self.lanes * self.itemsize


def matmul_config(dtype: str, spec: TargetSpec | None = None) -> MatmulConfig:
    """Return the tile and block sizes for ``dtype`` on ``spec`` (default: the host).

    The tile uses all but a few vector registers for accumulators: 16 registers (SSE, AVX2)
    give 6 rows of 2 vectors, 32 registers (AVX-512) 12 rows of 2 vectors. KC makes a packed
    ``KC x NR`` panel of B 24 KiB (three quarters of a 32 KiB L1 data cache: measured on Zen 3,
    384 beat 256 and 192 by 2-4% at 1024 cubed), MC a packed ``MC x KC`` block of A about
    150 KiB (under a third of a 512 KiB L2; 72 to 240 rows measured within noise).

    Examples
    --------
    >>> avx2 = TargetSpec("x86_64-unknown-linux-gnu", "znver3", "+avx,+avx2,+fma")
    >>> c = matmul_config("float32", avx2)
    >>> (c.mr, c.nr, c.kc, c.mc)
    (6, 16, 384, 96)
    >>> matmul_config("float64", TargetSpec("x86_64-unknown-linux-gnu", "skx", "+avx512f")).nr
    16
    """
    dtype = float_dtype_name(dtype)  # rejects anything but float32 and float64
    spec = spec or host_spec()
    itemsize = FLOAT_DTYPES[dtype][1]
    lanes = spec.vector_bits // (8 * itemsize)
    mr = 12 if spec.vector_bits == 512 else 6
    nr = 2 * lanes
    kc = max(64, 24 * 1024 // (nr * itemsize) // lanes * lanes)
    mc = max(mr, (150 * 1024 // (kc * itemsize)) // mr * mr)
    nc = 4096 // nr * nr
    return MatmulConfig(dtype, lanes, mr, 2, kc, mc, nc, direct_volume=64**3)


def _checked_config(dtype: str, config: MatmulConfig | None) -> MatmulConfig:
    """``config``, or the host's for ``dtype``; checked against ``dtype`` and for consistency."""
    if config is None:
        return matmul_config(dtype)
    if not isinstance(config, MatmulConfig):
        raise TypeError(f"config must be a MatmulConfig, got {type(config).__name__}")
    if config.dtype != float_dtype_name(dtype):
        raise ValueError(f"config is for {config.dtype}, not {float_dtype_name(dtype)}")
    return config


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _workspace_parts(m: int, n: int, k: int, cfg: MatmulConfig) -> tuple[int, int]:
    """Elements of the packed-A and packed-B regions (A's rounded to a cache line)."""
    kc = min(k, cfg.kc)
    a = _round_up(_round_up(min(m, cfg.mc), cfg.mr) * kc, _ALIGN // cfg.itemsize)
    b = kc * _round_up(min(n, cfg.nc), cfg.nr)
    return a, b


def matmul_workspace_size(m: int, n: int, k: int, dtype: str, config: MatmulConfig | None = None) -> int:
    """Number of ``dtype`` elements the ``work`` argument of a matmul kernel must hold.

    Parameters
    ----------
    m, n, k : int
        ``op(A)`` is ``m x k``, ``op(B)`` is ``k x n``; non-negative.
    dtype : str
        ``"float32"`` or ``"float64"``.
    config : MatmulConfig, optional
        The configuration the kernel was emitted with; defaults to the host's.

    Returns
    -------
    int
        Elements; any alignment of the buffer to its element size will do.

    Examples
    --------
    >>> matmul_workspace_size(0, 0, 0, "float32")
    16
    >>> matmul_workspace_size(1000, 1000, 1000, "float32") < matmul_workspace_size(1000, 2000, 1000, "float32")
    True
    """
    for label, value in (("m", m), ("n", n), ("k", k)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
    cfg = _checked_config(dtype, config)
    a, b = _workspace_parts(int(m), int(n), int(k), cfg)
    return a + b + _ALIGN // cfg.itemsize


# --------------------------------------------------------------------------- IR helpers


class _Emitter:
    """An IR builder with the types and small idioms of one kernel configuration."""

    def __init__(self, builder: ir.IRBuilder, cfg: MatmulConfig):
        self.b = builder
        self.cfg = cfg
        self.scalar = llvm_float_type(cfg.dtype)
        self.vector = ir.VectorType(self.scalar, cfg.lanes)
        self.zeros = ir.Constant(self.vector, [0.0] * cfg.lanes)  # one object: printed once
        self.mask_type = ir.VectorType(_I1, cfg.lanes)
        self.module = builder.module

    @staticmethod
    def i64(value: int) -> ir.Constant:
        return ir.Constant(_I64, value)

    def min(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", x, y), x, y)

    def at(self, pointer: ir.Value, *offsets: ir.Value | int) -> ir.Value:
        """``pointer + sum(offsets)`` in elements."""
        for offset in offsets:
            if isinstance(offset, int):
                if offset == 0:
                    continue
                offset = self.i64(offset)
            pointer = self.b.gep(pointer, [offset])
        return pointer

    def load_vector(self, pointer: ir.Value, align: int) -> ir.Value:
        return self.b.load(self.b.bitcast(pointer, self.vector.as_pointer()), align=align)

    def store_vector(self, value: ir.Value, pointer: ir.Value, align: int) -> None:
        self.b.store(value, self.b.bitcast(pointer, self.vector.as_pointer()), align=align)

    def splat(self, scalar: ir.Value) -> ir.Value:
        lanes = self.cfg.lanes
        undef = ir.Constant(self.vector, None)
        single = self.b.insert_element(undef, scalar, ir.Constant(_I32, 0))
        return self.b.shuffle_vector(single, undef, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))

    def lane_mask(self, count: ir.Value, first_lane: int) -> ir.Value:
        """Vector of ``first_lane + lane < count``, for masked loads and stores.

        Compared in 32-bit lanes (``count`` is at most NR): AVX2 keeps that mask in one
        register through a loop, where 64-bit lanes took two comparisons and four shuffles
        to remake it in every iteration.
        """
        lanes = self.cfg.lanes
        index_type = ir.VectorType(_I32, lanes)
        undef = ir.Constant(index_type, None)
        single = self.b.insert_element(undef, self.b.trunc(count, _I32), ir.Constant(_I32, 0))
        limit = self.b.shuffle_vector(single, undef, ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))
        return self.b.icmp_signed("<", ir.Constant(index_type, list(range(first_lane, first_lane + lanes))), limit)

    def intrinsic(self, name: str, return_type: ir.Type, arg_types: list[ir.Type]) -> ir.Function:
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(return_type, arg_types), name=name)

    def fmuladd(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        # fmuladd fuses on targets with FMA and splits into mul + add elsewhere, where a
        # plain llvm.fma would become a slow libm call.
        fn = self.intrinsic(f"llvm.fmuladd.{self._suffix()}", self.vector, [self.vector] * 3)
        return self.b.call(fn, [a, b, c])

    def masked_load(self, pointer: ir.Value, mask: ir.Value, align: int) -> ir.Value:
        """Load the lanes where ``mask`` is set and zeros elsewhere, touching no other memory."""
        vp = self.vector.as_pointer()
        name = f"llvm.masked.load.{self._suffix()}.p0"
        fn = self.intrinsic(name, self.vector, [vp, _I32, self.mask_type, self.vector])
        return self.b.call(fn, [self.b.bitcast(pointer, vp), ir.Constant(_I32, align), mask, self.zeros])

    def masked_store(self, value: ir.Value, pointer: ir.Value, mask: ir.Value, align: int) -> None:
        vp = self.vector.as_pointer()
        fn = self.intrinsic(f"llvm.masked.store.{self._suffix()}.p0", _VOID, [self.vector, vp, _I32, self.mask_type])
        self.b.call(fn, [value, self.b.bitcast(pointer, vp), ir.Constant(_I32, align), mask])

    def _suffix(self) -> str:
        return f"v{self.cfg.lanes}{'f32' if self.cfg.itemsize == 4 else 'f64'}"

    def no_vectorize(self, branch: ir.Instruction) -> None:
        """Mark the loop whose back edge is ``branch`` as not to be vectorised.

        Every loop here is either vector code already or too short to gain, and the loop
        vectorizer would spend a good part of the compile time on them.
        """
        set_loop_hints(branch, {"llvm.loop.vectorize.enable": False})

    @contextmanager
    def loop(self, start: ir.Value, stop: ir.Value, step: int | ir.Value, name: str) -> Iterator[ir.Value]:
        """``for i in range(start, stop, step)`` around the body emitted inside the block."""
        b = self.b
        before = b.block
        head = b.append_basic_block(f"{name}.head")
        body = b.append_basic_block(f"{name}.body")
        done = b.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        index = b.phi(_I64, name=name)
        index.add_incoming(start, before)
        b.cbranch(b.icmp_signed("<", index, stop), body, done)
        b.position_at_end(body)
        yield index
        step = self.i64(step) if isinstance(step, int) else step
        index.add_incoming(b.add(index, step), b.block)
        self.no_vectorize(b.branch(head))
        b.position_at_end(done)

    @contextmanager
    def if_then(self, condition: ir.Value, name: str) -> Iterator[None]:
        """Emit the body only where ``condition`` holds, then continue after it."""
        b = self.b
        then = b.append_basic_block(f"{name}.then")
        after = b.append_basic_block(f"{name}.after")
        b.cbranch(condition, then, after)
        b.position_at_end(then)
        yield
        b.branch(after)
        b.position_at_end(after)


def _new_function(module: ir.Module, name: str, arg_types: list[ir.Type], noalias: tuple[int, ...]) -> ir.Function:
    """An internal helper function; ``noalias`` lists the pointer arguments that never overlap."""
    fn = ir.Function(module, ir.FunctionType(_VOID, arg_types), name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    # Called once per tile or panel, so a call costs nothing measurable, while inlining
    # copies of every helper into every matmul of a module doubled its compile time.
    fn.attributes.add("noinline")
    for index in noalias:
        fn.args[index].add_attribute("noalias")
    return fn


# --------------------------------------------------------------------------- micro-kernel


def _micro_kernel_signature(cfg: MatmulConfig) -> tuple[list[ir.Type], tuple[int, ...]]:
    """Argument types and ``noalias`` arguments of `_emit_micro_kernel`'s functions."""
    t = llvm_float_type(cfg.dtype).as_pointer()
    return [_I64, t, t, t, _I64, _I64, _I64, _I1], (1, 2, 3)


def _direct_kernel_signature(cfg: MatmulConfig) -> tuple[list[ir.Type], tuple[int, ...]]:
    """Argument types and ``noalias`` arguments of `_emit_direct_kernel`'s functions."""
    t = llvm_float_type(cfg.dtype).as_pointer()
    return [_I64, t, _I64, _I64, t, _I64, _I64, t, _I64, _I64, _I64, _I1], (1, 4, 7)


def _emit_micro_kernel(module: ir.Module, name: str, cfg: MatmulConfig, rows: int, sets: int) -> ir.Function:
    """``kernel(kc, Ap, Bp, C, ldc, mr, nr, beta)``: a ``rows x NR`` tile of C from packed panels.

    ``Ap`` holds ``kc`` columns of MR values (of which the first ``rows`` are used), ``Bp``
    ``kc`` rows of NR values (aligned). Only the top-left ``mr x nr`` of the tile is
    stored; ``beta`` adds the tile to C. ``sets`` independent sets of accumulators take
    turns over k and are summed at the end: a short tile has too few accumulators to hide
    the FMA latency by itself.
    """
    fn = _new_function(module, name, *_micro_kernel_signature(cfg))
    kc, ap, bp, c, ldc, mr, nr, beta = fn.args
    e = _Emitter(FoldingBuilder(fn.append_basic_block("entry")), cfg)
    _prefetch_tile(e, c, ldc, rows)
    zero = e.zeros
    tiles = [[[zero] * cfg.nr_vectors for _ in range(rows)] for _ in range(sets)]
    step = sets * -(-cfg.unroll // sets)
    tiles, k = _k_loop(e, tiles, ap, bp, e.i64(0), kc, step, "ku")
    tiles, _ = _k_loop(e, tiles, ap, bp, k, kc, 1, "k1")
    accs = tiles[0]
    for other in tiles[1:]:
        accs = [[e.b.fadd(x, y) for x, y in zip(row, other_row)] for row, other_row in zip(accs, other)]
    _store_tile(e, accs, c, ldc, mr, nr, beta)
    e.b.ret_void()
    return fn


def _emit_direct_kernel(
    module: ir.Module, name: str, cfg: MatmulConfig, rows: int, sets: int, clamped: bool
) -> ir.Function:
    """``kernel(kc, A, a_rs, a_ks, B, ldb, width, C, ldc, mr, nr, beta)``: a tile from unpacked operands.

    The tile of `_emit_micro_kernel`, reading ``op(A)[r, k]`` at ``A[r*a_rs + k*a_ks]`` and
    row ``k`` of ``op(B)`` at ``B[k*ldb:]`` (contiguous) instead of from packed panels; the
    first ``width >= nr`` values of each row of B may be read, and only the top-left
    ``mr x nr`` of the tile is stored. A tile whose B rows are narrower than NR computes
    only the vectors that hold their ``width`` values (one of two for ``width <= W``: half
    the FMAs of a padded panel for a one-column product) and loads the last of them under a
    lane mask, so it reads nothing past ``width``. Whole rows load it masked too: a
    plain-load copy of the loop measured no faster and made the library's IR a third
    larger. B read in place has ``width = nr``; a packed strip of Bᵀ holds NR values per
    row (zeros past ``nr``) and is read with ``width = NR``, whole rows under an all-true
    mask: reading it at ``width = nr`` made a 32 x 64 x 10 product slower than the packed
    path.
    Only a ``clamped`` kernel may be called with ``mr < rows``: its rows past ``mr``, which
    would read past A, read row ``mr - 1`` again into accumulators that are never stored.
    The others keep each row at a constant distance from A, which on x86 folds into the
    load's address (a clamped kernel needs a register per row and ran a third slower).
    The k loop steps one pointer down A's columns and one down B's rows, and each row of the
    tile reads at its fixed offset from the first: code generation alone makes plain
    addressing of that (see `DIRECT_KERNEL_PREFIX`).
    """
    fn = _new_function(module, name, *_direct_kernel_signature(cfg))
    kc, a, a_rs, a_ks, bmat, ldb, width, c, ldc, mr, nr, beta = fn.args
    e = _Emitter(FoldingBuilder(fn.append_basic_block("entry")), cfg)
    b = e.b
    last = b.sub(mr, e.i64(1))
    row_offsets = [b.mul(e.min(e.i64(r), last) if clamped else e.i64(r), a_rs) for r in range(rows)]
    # One branch per count of vectors that hold B's rows, the widest last; they meet at one
    # store of the tile (half of the kernel's code), the vectors a branch leaves out zero:
    # past ``nr``, they are never stored.
    store = b.append_basic_block("store")
    zero = e.zeros
    ends = []
    for used in range(1, cfg.nr_vectors + 1):
        if used < cfg.nr_vectors:
            here, wider = b.append_basic_block(f"v{used}"), b.append_basic_block(f"over{used}")
            b.cbranch(b.icmp_signed("<=", width, e.i64(used * cfg.lanes)), here, wider)
            b.position_at_end(here)
        mask = e.lane_mask(width, (used - 1) * cfg.lanes)
        accs = _direct_tile(e, a, row_offsets, a_ks, bmat, ldb, kc, used, mask, sets)
        ends.append((b.block, [row + [zero] * (cfg.nr_vectors - used) for row in accs]))
        b.branch(store)
        if used < cfg.nr_vectors:
            b.position_at_end(wider)
    b.position_at_end(store)
    accs = [[b.phi(e.vector) for _ in range(cfg.nr_vectors)] for _ in range(rows)]
    for block, values in ends:
        for phis, row in zip(accs, values):
            for phi, value in zip(phis, row):
                phi.add_incoming(value, block)
    _store_tile(e, accs, c, ldc, mr, nr, beta)
    b.ret_void()
    return fn


def _direct_tile(e: _Emitter, a, row_offsets, a_ks, bmat, ldb, kc, used: int, mask, sets: int):
    """The first ``used`` vectors of each row of the tile of `_emit_direct_kernel`, whose rows
    start at ``row_offsets`` from A; the last vector of B's rows is loaded under ``mask``."""
    b, cfg = e.b, e.cfg

    def load_b(pointer, v):
        if v < used - 1:
            return e.load_vector(pointer, cfg.itemsize)
        return e.masked_load(pointer, mask, cfg.itemsize)

    def update(accs, pointers):
        a_col, b_row = pointers
        b_vectors = [load_b(e.at(b_row, v * cfg.lanes), v) for v in range(used)]
        out = []
        for offset, acc_row in zip(row_offsets, accs):
            scalar = e.splat(b.load(b.gep(a_col, [offset]), align=cfg.itemsize))
            out.append([e.fmuladd(scalar, bv, acc) for bv, acc in zip(b_vectors, acc_row)])
        return out

    def cursors(start):
        return [(b.gep(a, [b.mul(start, a_ks)]), a_ks), (b.gep(bmat, [b.mul(start, ldb)]), ldb)]

    zero = e.zeros
    tiles = [[[zero] * used for _ in row_offsets] for _ in range(sets)]
    step = sets * -(-cfg.unroll // sets)
    tiles, k = _accumulate(e, tiles, update, e.i64(0), kc, step, "ku", cursors(e.i64(0)))
    tiles, _ = _accumulate(e, tiles, update, k, kc, 1, "k1", cursors(k))
    accs = tiles[0]
    for other in tiles[1:]:
        accs = [[b.fadd(x, y) for x, y in zip(row, other_row)] for row, other_row in zip(accs, other)]
    return accs


def _edge_kernels(cfg: MatmulConfig) -> list[tuple[int, int]]:
    """(rows, accumulator sets) of the short kernels for the last rows of a block.

    A block of M rows ends in a tile of ``M mod MR`` rows (2 of 6 for M = 128); running a
    full tile there costs as much as a full one. Tiles of a third and two thirds of MR,
    with as many accumulator sets as the registers hold, take 1/3 and 2/3 of the time.
    """
    budget = cfg.mr * cfg.nr_vectors
    rows = sorted({r for r in (cfg.mr // 3, 2 * cfg.mr // 3) if 0 < r < cfg.mr})
    return [(r, max(1, budget // (r * cfg.nr_vectors))) for r in rows]


def _prefetch_tile(e: _Emitter, c, ldc, rows: int) -> None:
    """Ask for the tile's rows of C now, so they arrive while the k loop runs.

    Prefetching an address outside the tile (an edge tile's absent rows) cannot fault.
    """
    b, cfg = e.b, e.cfg
    i8p = ir.IntType(8).as_pointer()
    fn = e.intrinsic("llvm.prefetch.p0", _VOID, [i8p, _I32, _I32, _I32])
    last = cfg.nr - 1
    for r in range(rows):
        row = b.gep(c, [b.mul(e.i64(r), ldc)])
        for offset in (0, last):
            # rw = 1 (for writing), locality = 3 (keep in all levels), data cache.
            args = [b.bitcast(e.at(row, offset), i8p), ir.Constant(_I32, 1), ir.Constant(_I32, 3), ir.Constant(_I32, 1)]
            b.call(fn, args)


def _k_loop(e: _Emitter, tiles, ap, bp, start, kc, step: int, name: str):
    """Accumulate steps ``start, start+1, ...`` of packed panels while ``step`` more fit below ``kc``.

    ``tiles`` is a list of accumulator sets (rows of vectors); step ``u`` of an iteration
    updates set ``u mod len(tiles)``. Returns the accumulators and the first step not done.
    The loop steps its own pointers through the panels, so that every load is at a constant
    offset from one of them (code generation runs without LLVM's loop strength reduction,
    which would otherwise have made them so: see `codegen.target`).
    """
    cfg = e.cfg
    panels = [
        (e.b.gep(ap, [e.b.mul(start, e.i64(cfg.mr))]), cfg.mr),
        (e.b.gep(bp, [e.b.mul(start, e.i64(cfg.nr))]), cfg.nr),
    ]

    def update(accs, pointers):
        a_col, b_row = pointers
        return _fma_step(e, accs, a_col, b_row)

    return _accumulate(e, tiles, update, start, kc, step, name, panels)


def _accumulate(e: _Emitter, tiles, update, start, kc, step: int, name: str, cursors=()):
    """The k loop around ``update(accs, pointers)``, the rank-1 update of one step.

    The accumulators are phi nodes, which is what keeps them in registers. ``cursors`` are
    ``(pointer at step start, elements per step)`` pairs, the elements an int or an IR value:
    the loop advances each pointer itself, and ``pointers`` are their values at that step.
    """
    b = e.b
    before = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    k = b.phi(_I64, name=name)
    k.add_incoming(start, before)
    pointers = [b.phi(pointer.type) for pointer, _ in cursors]
    for phi, (pointer, _) in zip(pointers, cursors):
        phi.add_incoming(pointer, before)
    phis = [[[b.phi(e.vector) for _ in row] for row in tile] for tile in tiles]
    _add_incoming(phis, tiles, before)
    b.cbranch(b.icmp_signed("<=", b.add(k, e.i64(step)), kc), body, done)
    b.position_at_end(body)
    new = list(phis)
    current = list(pointers)
    for u in range(step):
        s = u % len(tiles)
        new[s] = update(new[s], current)
        current = [e.at(pointer, stride) for pointer, (_, stride) in zip(current, cursors)]
    k.add_incoming(b.add(k, e.i64(step)), b.block)
    for phi, pointer in zip(pointers, current):
        phi.add_incoming(pointer, b.block)
    _add_incoming(phis, new, b.block)
    e.no_vectorize(b.branch(head))
    b.position_at_end(done)
    return phis, k


def _add_incoming(phis, values, block) -> None:
    """Add ``values`` as the incoming values from ``block`` of the matching nested ``phis``."""
    for phi_tile, tile in zip(phis, values):
        for phi_row, row in zip(phi_tile, tile):
            for phi, value in zip(phi_row, row):
                phi.add_incoming(value, block)


def _fma_step(e: _Emitter, accs, a_col: ir.Value, b_row: ir.Value):
    """One rank-1 update of the tile: ``acc[r][v] += A[r] * B[v]``."""
    cfg = e.cfg
    b_vectors = [e.load_vector(e.at(b_row, v * cfg.lanes), cfg.vector_bytes) for v in range(cfg.nr_vectors)]
    out = []
    for r, row in enumerate(accs):
        a = e.splat(e.b.load(e.at(a_col, r), align=cfg.itemsize))
        out.append([e.fmuladd(a, bv, acc) for bv, acc in zip(b_vectors, row)])
    return out


def _store_tile(e: _Emitter, accs, c, ldc, mr, nr, beta) -> None:
    """Write the accumulators to C: plain vector stores for a whole tile, masked at the edges."""
    b, cfg = e.b, e.cfg
    whole = b.and_(b.icmp_signed("==", mr, e.i64(len(accs))), b.icmp_signed("==", nr, e.i64(cfg.nr)))
    full_block = b.append_basic_block("store.full")
    edge_block = b.append_basic_block("store.edge")
    exit_block = b.append_basic_block("store.exit")
    b.cbranch(whole, full_block, edge_block)

    b.position_at_end(full_block)
    add_block = b.append_basic_block("store.full.add")
    set_block = b.append_basic_block("store.full.set")
    b.cbranch(beta, add_block, set_block)
    for block, add in ((add_block, True), (set_block, False)):
        b.position_at_end(block)
        for r, row in enumerate(accs):
            c_row = b.gep(c, [b.mul(e.i64(r), ldc)])
            for v, acc in enumerate(row):
                pointer = e.at(c_row, v * cfg.lanes)
                value = b.fadd(acc, e.load_vector(pointer, cfg.itemsize)) if add else acc
                e.store_vector(value, pointer, cfg.itemsize)
        b.branch(exit_block)

    # Edge tiles: rows past mr are skipped by branches, columns past nr by lane masks, so
    # no memory outside the mr x nr corner is touched. Masked stores are slow on some CPUs
    # (AMD), so tiles cut only in M keep plain ones.
    b.position_at_end(edge_block)
    rows_block = b.append_basic_block("store.rows")
    masked_block = b.append_basic_block("store.masked")
    b.cbranch(b.icmp_signed("==", nr, e.i64(cfg.nr)), rows_block, masked_block)
    b.position_at_end(rows_block)
    _store_rows(e, accs, c, ldc, mr, beta, None, exit_block)
    b.position_at_end(masked_block)
    masks = [e.lane_mask(nr, v * cfg.lanes) for v in range(cfg.nr_vectors)]
    _store_rows(e, accs, c, ldc, mr, beta, masks, exit_block, nr)
    b.position_at_end(exit_block)


def _store_rows(e: _Emitter, accs, c, ldc, mr, beta, masks, exit_block, nr=None) -> None:
    """Store the first ``mr`` rows of the tile, under lane ``masks`` if given; branch to exit.

    Masked, the tile is stored one vector of every row after another, and a vector wholly
    past ``nr`` is not stored at all: a masked load and store that touch nothing still cost
    their time on some CPUs (a 64 x 24 x 64 product 1.07-1.12 times slower).
    """
    b, cfg = e.b, e.cfg
    vectors = range(len(accs[0]))
    passes = [list(vectors)] if masks is None else [[v] for v in vectors]
    for index, columns in enumerate(passes):
        last = index == len(passes) - 1
        done = exit_block if last else b.append_basic_block(f"store.v{index + 1}")
        if index:  # this vector holds a column of the tile only if nr reaches past the ones before
            reached = b.append_basic_block(f"store.v{index}.rows")
            b.cbranch(b.icmp_signed(">", nr, e.i64(columns[0] * cfg.lanes)), reached, exit_block)
            b.position_at_end(reached)
        for r, row in enumerate(accs):
            if r:
                row_block = b.append_basic_block(f"store.row{r}")
                b.cbranch(b.icmp_signed("<", e.i64(r), mr), row_block, done)
                b.position_at_end(row_block)
            c_row = b.gep(c, [b.mul(e.i64(r), ldc)])
            for v in columns:
                pointer = e.at(c_row, v * cfg.lanes)
                if masks is None:
                    old = e.load_vector(pointer, cfg.itemsize)
                else:
                    old = e.masked_load(pointer, masks[v], cfg.itemsize)
                # select, not a multiply by beta: C's old contents may be NaN when not accumulating.
                value = b.select(beta, b.fadd(row[v], old), row[v])
                if masks is None:
                    e.store_vector(value, pointer, cfg.itemsize)
                else:
                    e.masked_store(value, pointer, masks[v], cfg.itemsize)
        b.branch(done)
        if not last:
            b.position_at_end(done)


# --------------------------------------------------------------------------- packing


def _emit_pack(module: ir.Module, name: str, cfg: MatmulConfig, width: int, along_width: bool) -> ir.Function:
    """``pack(dst, src, kc, valid, ks, ws)``: ``dst[k*width + w] = src[k*ks + w*ws]``.

    Lanes ``w >= valid`` are written as zeros. ``along_width`` says the source is
    contiguous along ``w`` (``ws == 1``), otherwise along ``k`` (``ks == 1``); the unit
    stride is then taken as 1 whatever is passed.
    """
    fn = _new_function(module, name, *_pack_signature(cfg))
    dst, src, kc, valid, ks, ws = fn.args
    e = _Emitter(FoldingBuilder(fn.append_basic_block("entry")), cfg)
    if along_width:
        _pack_rows(e, dst, src, kc, valid, ks, width)
    else:
        # Whole blocks of `lanes` k values are transposed in registers; the rest one by one.
        blocks = e.b.mul(e.b.sdiv(kc, e.i64(cfg.lanes)), e.i64(cfg.lanes))
        _pack_transposed(e, dst, src, blocks, valid, ws, width)
        _pack_scalars(e, dst, src, blocks, kc, valid, e.i64(1), ws, width)
    e.b.ret_void()
    return fn


def _pack_rows(e: _Emitter, dst, src, kc, valid, ks, width: int) -> None:
    """Source rows contiguous in ``w``: whole-row vector copies; a partial panel is masked
    (zero-filling) where the width is whole vectors, else copied element by element."""
    b, cfg = e.b, e.cfg
    row_type = ir.VectorType(e.scalar, width)
    whole_vectors = width % cfg.lanes == 0
    full_block = b.append_basic_block("full")
    part_block = b.append_basic_block("part")
    exit_block = b.append_basic_block("exit")
    b.cbranch(b.icmp_signed("==", valid, e.i64(width)), full_block, part_block)
    b.position_at_end(full_block)
    with e.loop(e.i64(0), kc, 1, "k") as k:
        # One <width x T> value per row; LLVM splits it into the target's vectors.
        row = b.load(b.bitcast(b.gep(src, [b.mul(k, ks)]), row_type.as_pointer()), align=cfg.itemsize)
        out = b.bitcast(b.gep(dst, [b.mul(k, e.i64(width))]), row_type.as_pointer())
        b.store(row, out, align=cfg.vector_bytes if whole_vectors else cfg.itemsize)
    b.branch(exit_block)
    b.position_at_end(part_block)
    if whole_vectors:
        masks = [e.lane_mask(valid, v * cfg.lanes) for v in range(width // cfg.lanes)]
        with e.loop(e.i64(0), kc, 1, "k") as k:
            row = b.gep(src, [b.mul(k, ks)])
            out = b.gep(dst, [b.mul(k, e.i64(width))])
            for v, mask in enumerate(masks):
                value = e.masked_load(e.at(row, v * cfg.lanes), mask, cfg.itemsize)
                e.store_vector(value, e.at(out, v * cfg.lanes), cfg.vector_bytes)
    else:
        _pack_scalars(e, dst, src, e.i64(0), kc, valid, ks, e.i64(1), width)
    b.branch(exit_block)
    b.position_at_end(exit_block)


def _clamped_lanes(e: _Emitter, src, valid, ws, width: int) -> list[tuple[ir.Value, ir.Value]]:
    """For each lane ``w``: (``w < valid``, pointer to source lane ``min(w, valid - 1)``).

    Clamping keeps every load inside the source matrix; the lanes past ``valid`` are
    zeroed by the caller.
    """
    b = e.b
    last = b.sub(valid, e.i64(1))
    lanes = []
    for w in range(width):
        inside = b.icmp_signed("<", e.i64(w), valid)
        lanes.append((inside, b.gep(src, [b.mul(b.select(inside, e.i64(w), last), ws)])))
    return lanes


def _pack_scalars(e: _Emitter, dst, src, start, kc, valid, ks, ws, width: int) -> None:
    """Steps ``start <= k < kc`` element by element."""
    b = e.b
    zero = ir.Constant(e.scalar, 0.0)
    lanes = _clamped_lanes(e, src, valid, ws, width)
    with e.loop(start, kc, 1, "ks") as k:
        offset = b.mul(k, ks)
        out = b.gep(dst, [b.mul(k, e.i64(width))])
        for w, (inside, base) in enumerate(lanes):
            value = b.load(b.gep(base, [offset]), align=e.cfg.itemsize)
            b.store(b.select(inside, value, zero), e.at(out, w), align=e.cfg.itemsize)


def _pack_transposed(e: _Emitter, dst, src, kc, valid, ws, width: int) -> None:
    """Source contiguous in ``k``, ``kc`` a multiple of the lanes: in-register transposes.

    Each step loads ``lanes`` consecutive k values of every source lane ``w``, transposes
    groups of ``lanes`` such vectors, and stores one group of ``min(lanes, width - g)``
    values per k. Lanes past ``valid`` are zeroed with a select.
    """
    b, cfg = e.b, e.cfg
    lanes = cfg.lanes
    sources = _clamped_lanes(e, src, valid, ws, width)
    zero = e.zeros
    groups = []
    for g in range(0, width, lanes):
        count = min(lanes, width - g)
        groups.append((g, count, e.lane_mask(b.sub(valid, e.i64(g)), 0)))
    with e.loop(e.i64(0), kc, lanes, "kt") as k:
        for g, count, mask in groups:
            rows = [e.load_vector(b.gep(base, [k]), cfg.itemsize) for _, base in sources[g : g + count]]
            rows += [zero] * (lanes - count)
            for j, column in enumerate(transpose_block(e.b, rows)):
                column = b.select(mask, column, zero)
                out = e.at(dst, b.mul(b.add(k, e.i64(j)), e.i64(width)), g)
                _store_prefix(e, column, out, count, aligned=width % lanes == 0)


def transpose_block(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose a square block of vectors: ``out[i][c] == rows[c][i]``.

    Stage ``g`` (1, 2, 4, ...) swaps bit ``g`` of the row and column indices, pairing
    rows ``i`` and ``i + g``; each stage is one two-input shuffle per row, which x86
    lowers to unpack, shuffle, blend and 128-bit lane permutes.

    >>> v = ir.VectorType(ir.FloatType(), 2)
    >>> fn = ir.Function(ir.Module(), ir.FunctionType(v, [v, v]), "t")
    >>> first, _ = transpose_block(ir.IRBuilder(fn.append_basic_block()), list(fn.args))
    >>> str(first).split("=")[1].strip()
    'shufflevector <2 x float> %".1", <2 x float> %".2", <2 x i32> <i32 0, i32 2>'
    """
    lanes = len(rows)
    rows = list(rows)
    g = 1
    while g < lanes:
        low_mask = [c if not c & g else lanes + c - g for c in range(lanes)]
        high_mask = [c + g if not c & g else lanes + c for c in range(lanes)]
        new = list(rows)
        for i in range(lanes):
            if i & g:
                continue
            low, high = rows[i], rows[i + g]
            new[i] = b.shuffle_vector(low, high, ir.Constant(ir.VectorType(_I32, lanes), low_mask))
            new[i + g] = b.shuffle_vector(low, high, ir.Constant(ir.VectorType(_I32, lanes), high_mask))
        rows = new
        g *= 2
    return rows


def _store_prefix(e: _Emitter, vector: ir.Value, pointer: ir.Value, count: int, aligned: bool) -> None:
    """Store the first ``count`` lanes of ``vector`` (a narrower vector store when partial)."""
    cfg = e.cfg
    if count == cfg.lanes:
        e.store_vector(vector, pointer, cfg.vector_bytes if aligned else cfg.itemsize)
        return
    narrow = ir.VectorType(e.scalar, count)
    prefix = e.b.shuffle_vector(vector, vector, ir.Constant(ir.VectorType(_I32, count), list(range(count))))
    e.b.store(prefix, e.b.bitcast(pointer, narrow.as_pointer()), align=cfg.itemsize)


# --------------------------------------------------------------------------- driver


def matmul_function_type(dtype: str) -> ir.FunctionType:
    """The LLVM type of every `emit_matmul` function of ``dtype``, for declaring one.

    >>> str(matmul_function_type("float64"))
    'void (i64, i64, i64, double*, i64, double*, i64, double*, i64, i32, double*)'
    """
    t = llvm_float_type(dtype).as_pointer()
    return ir.FunctionType(_VOID, [_I64, _I64, _I64, t, _I64, t, _I64, t, _I64, _I32, t])


def emit_matmul(
    module: ir.Module,
    name: str,
    dtype: str,
    trans_a: bool,
    trans_b: bool,
    config: MatmulConfig | None = None,
    *,
    external_kernels: bool = False,
) -> ir.Function:
    """Add ``void name(M, N, K, A, lda, B, ldb, C, ldc, accumulate, work)`` to ``module``.

    The function computes ``C = op(A) op(B)``, or ``C += op(A) op(B)`` when ``accumulate``
    is non-zero, for row-major matrices: ``op(A)`` is ``M x K`` (``A`` is ``K x M`` when
    ``trans_a``), ``op(B)`` is ``K x N``, ``C`` is ``M x N``; ``lda``, ``ldb``, ``ldc`` are
    the row strides in elements. C signature::

        void name(int64 M, int64 N, int64 K, const T *A, int64 lda, const T *B, int64 ldb,
                  T *C, int64 ldc, int32 accumulate, T *work)

    ``work`` must hold `matmul_workspace_size` ``(M, N, K)`` elements. The caller
    guarantees that the row strides are at least the row lengths and that C and work
    overlap no other argument (A, B, C and work are ``noalias``; A and B may overlap each
    other, being only read). Only element alignment is assumed of any pointer.
    ``M <= 0`` or ``N <= 0`` does nothing; ``K <= 0`` zeroes C unless accumulating.

    Parameters
    ----------
    module : llvmlite.ir.Module
        Module to add the function to, with internal helpers ``matmul.*`` shared by all
        matmuls of the module; it is compiled for the host, whose vector width sets the tile
        (`matmul_config`).
    name : str
        Function name.
    dtype : str
        ``"float32"`` or ``"float64"``.
    trans_a, trans_b : bool
        Whether ``op`` transposes A, B.
    config : MatmulConfig, optional
        Tile and block sizes; defaults to `matmul_config` for the host. Any configuration
        gives correct results; others than the host's are for tests and tuning.
    external_kernels : bool
        Declare the micro-kernels, the kernels on unpacked operands and the packing
        functions instead of emitting them: they are linked from the modules of
        `emit_kernel_part` (the parts that `kernel_parts` lists), compiled once for every
        variant that calls them.

    Returns
    -------
    llvmlite.ir.Function

    Examples
    --------
    >>> m = ir.Module()
    >>> fn = emit_matmul(m, "mm", "float32", False, True)
    >>> [str(a.type) for a in fn.args][:5]
    ['i64', 'i64', 'i64', 'float*', 'i64']
    """
    cfg = _checked_config(dtype, config)
    fn = ir.Function(module, matmul_function_type(dtype), name=name)
    fn.attributes.add("nounwind")
    for index in (3, 5, 7, 10):
        fn.args[index].add_attribute("noalias")
    # The helpers depend only on the configuration, so every matmul of a module shares them.
    tag = _tag(cfg)
    kernels = _shared_kernels(module, tag, cfg, external_kernels)
    # A packed panel is MR rows of op(A) read along k; it is contiguous along the panel
    # width exactly when A is stored transposed. Likewise B's NR columns when not transposed.
    pack_a = _shared_pack(module, tag, cfg, cfg.mr, bool(trans_a), external_kernels)
    pack_b = _shared_pack(module, tag, cfg, cfg.nr, not trans_b, external_kernels)
    # Small products read A in place; B too, unless op(B) = Bᵀ, whose rows are columns of B
    # and are packed one strip at a time (see `_packed_strip`).
    direct = _shared_direct_kernels(module, tag, cfg, external_kernels) if cfg.direct_volume else None
    _emit_driver(fn, cfg, kernels, pack_a, pack_b, bool(trans_a), bool(trans_b), direct)
    return fn


def _tag(cfg: MatmulConfig) -> str:
    """The part of the helpers' names that says which configuration they are for."""
    return f"{cfg.dtype}.{cfg.mr}x{cfg.nr_vectors}x{cfg.lanes}"


def _shared(module: ir.Module, name: str, emit, signature=None) -> ir.Function:
    """The module's function ``name``, emitted by ``emit(name)`` on first use, or with a
    ``signature`` (argument types, ``noalias`` arguments) declared, for another module to define."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    if signature is None:
        return emit(name)
    arg_types, noalias = signature
    fn = ir.Function(module, ir.FunctionType(_VOID, arg_types), name=name)
    for index in noalias:
        fn.args[index].add_attribute("noalias")
    return fn


def _micro_kernel(module: ir.Module, tag: str, cfg: MatmulConfig, rows: int, sets: int, declared: bool) -> ir.Function:
    """The micro-kernel for tiles of ``rows`` rows (`_emit_micro_kernel`); ``declared``
    declares it (see `_shared`)."""
    name = f"{MICRO_KERNEL_PREFIX}{tag}.u{cfg.unroll}.r{rows}s{sets}"
    signature = _micro_kernel_signature(cfg) if declared else None
    return _shared(module, name, lambda n: _emit_micro_kernel(module, n, cfg, rows, sets), signature)


def _direct_kernel(
    module: ir.Module, tag: str, cfg: MatmulConfig, rows: int, sets: int, clamped: bool, declared: bool
) -> ir.Function:
    """The kernel on unpacked operands for tiles of ``rows`` rows (`_emit_direct_kernel`);
    ``declared`` declares it (see `_shared`)."""
    name = f"{DIRECT_KERNEL_PREFIX}{tag}.u{cfg.unroll}.r{rows}s{sets}{'.clamped' if clamped else ''}"
    signature = _direct_kernel_signature(cfg) if declared else None
    emit = lambda n: _emit_direct_kernel(module, n, cfg, rows, sets, clamped)  # noqa: E731
    return _shared(module, name, emit, signature)


def _shared_kernels(
    module: ir.Module, tag: str, cfg: MatmulConfig, declared: bool = False
) -> list[tuple[int, ir.Function]]:
    """(tile height, micro-kernel) pairs, shortest first: the edge kernels, then the full tile;
    ``declared`` declares them (see `_shared`)."""
    return [(rows, _micro_kernel(module, tag, cfg, rows, sets, declared)) for rows, sets in _tiles(cfg)]


def _shared_direct_kernels(module: ir.Module, tag: str, cfg: MatmulConfig, declared: bool = False):
    """The kernels on unpacked A: the full tile, and (height, clamped kernel) pairs as
    `_shared_kernels` lists them for the last rows of a product (see `_emit_direct_kernel`);
    ``declared`` declares them."""
    edges = [(rows, _direct_kernel(module, tag, cfg, rows, sets, True, declared)) for rows, sets in _tiles(cfg)]
    return _direct_kernel(module, tag, cfg, cfg.mr, 1, False, declared), edges


def _tiles(cfg: MatmulConfig) -> list[tuple[int, int]]:
    """(rows, accumulator sets) of every tile a kernel is emitted for: the edges, then the full one."""
    return [*_edge_kernels(cfg), *_full_tile(cfg)]


def _full_tile(cfg: MatmulConfig) -> list[tuple[int, int]]:
    return [(cfg.mr, 1)]


def _direct_only(tiles):
    """The tiles of ``tiles(cfg)`` for a configuration with kernels on unpacked operands."""
    return lambda cfg: tiles(cfg) if cfg.direct_volume else []


def _pack_shapes(cfg: MatmulConfig) -> list[tuple[int, bool]]:
    """(width, along_width) of every packing function the variants call: panels of A (MR
    wide) and of B (NR wide), from either layout."""
    return list(dict.fromkeys((width, along) for width in (cfg.mr, cfg.nr) for along in (False, True)))


# The functions that every variant of a dtype calls, by the part of the library that holds
# them (see `emit_kernel_part`): the packing, the kernels on unpacked operands (which read B
# in place or from a zero-padded strip, op(B) = Bᵀ) and the packed-panel micro-kernels. Each
# part is what its first function lists for a configuration (tiles ``(rows, sets)``, or
# packing shapes), each emitted by the second; a configuration without any has no such part.
# They are parts of a few dozen milliseconds of LLVM each rather than two large ones, so
# that the two processes compiling a library (`codegen.library`) finish close together.
KERNEL_PARTS = {
    "packing": (_pack_shapes, lambda m, tag, cfg, shape: _shared_pack(m, tag, cfg, *shape)),
    "direct_edges": (_direct_only(_edge_kernels), lambda m, tag, cfg, t: _direct_kernel(m, tag, cfg, *t, True, False)),
    "direct_clamped": (_direct_only(_full_tile), lambda m, tag, cfg, t: _direct_kernel(m, tag, cfg, *t, True, False)),
    "direct": (_direct_only(_full_tile), lambda m, tag, cfg, t: _direct_kernel(m, tag, cfg, *t, False, False)),
    "edge_kernels": (_edge_kernels, lambda m, tag, cfg, t: _micro_kernel(m, tag, cfg, *t, False)),
    "kernels": (_full_tile, lambda m, tag, cfg, t: _micro_kernel(m, tag, cfg, *t, False)),
}


def kernel_parts(dtype: str, config: MatmulConfig | None = None) -> tuple[str, ...]:
    """The parts of `KERNEL_PARTS` that a variant emitted with ``external_kernels`` links to:
    every variant the same ones, those that the configuration has functions for.

    >>> kernel_parts("float32")
    ('packing', 'direct_edges', 'direct_clamped', 'direct', 'edge_kernels', 'kernels')
    >>> kernel_parts("float32", MatmulConfig("float32", 8, 1, 2, 64, 64, 64))
    ('packing', 'kernels')
    """
    cfg = _checked_config(dtype, config)
    return tuple(part for part, (items, _) in KERNEL_PARTS.items() if items(cfg))


def emit_kernel_part(module: ir.Module, dtype: str, part: str, config: MatmulConfig | None = None) -> list[ir.Function]:
    """Add one part of the kernels shared by the variants of ``dtype`` (a key of
    `KERNEL_PARTS`), exported under the names that `emit_matmul` declares with
    ``external_kernels``; return its functions.

    The kernels are most of a variant's code and the same in every variant of a dtype, so
    a library of variants compiles them once, in modules of their own.

    >>> m = ir.Module()
    >>> names = [fn.name for fn in emit_kernel_part(m, "float64", "kernels")]
    >>> all(name.startswith("matmul.kernel.float64.") for name in names), m.get_global(names[0]).linkage
    (True, '')
    """
    if part not in KERNEL_PARTS:
        raise ValueError(f"part must be one of {sorted(KERNEL_PARTS)}, got {part!r}")
    cfg = _checked_config(dtype, config)
    items, emit = KERNEL_PARTS[part]
    functions = [emit(module, _tag(cfg), cfg, item) for item in items(cfg)]
    for fn in functions:
        fn.linkage = ""  # external: the variants' modules call them
    return functions


def _shared_pack(
    module: ir.Module, tag: str, cfg: MatmulConfig, width: int, along_width: bool, declared: bool = False
) -> ir.Function:
    """The packing function for panels ``width`` wide (`_emit_pack`); ``declared`` declares it."""
    name = f"matmul.pack.{tag}.w{width}.{'rows' if along_width else 'columns'}"
    signature = _pack_signature(cfg) if declared else None
    return _shared(module, name, lambda n: _emit_pack(module, n, cfg, width, along_width), signature)


def _pack_signature(cfg: MatmulConfig) -> tuple[list[ir.Type], tuple[int, ...]]:
    """Argument types and ``noalias`` arguments of `_emit_pack`'s functions."""
    t = llvm_float_type(cfg.dtype).as_pointer()
    return [t, t, _I64, _I64, _I64, _I64], (0, 1)


def _emit_driver(fn, cfg: MatmulConfig, kernels, pack_a, pack_b, trans_a: bool, trans_b: bool, direct) -> None:
    """The blocked loops around packing and the micro-kernel; with ``direct`` kernels, small
    products (``M * N * K <= cfg.direct_volume``) take `_direct_loops` instead."""
    m, n, k, a, lda, bmat, ldb, c, ldc, accumulate, work = fn.args
    e = _Emitter(FoldingBuilder(fn.append_basic_block("entry")), cfg)
    b = e.b
    exit_block = b.append_basic_block("exit")
    body = b.append_basic_block("nonempty")
    empty = b.or_(b.icmp_signed("<=", m, e.i64(0)), b.icmp_signed("<=", n, e.i64(0)))
    b.cbranch(empty, exit_block, body)
    b.position_at_end(body)
    accumulate = b.icmp_signed("!=", accumulate, ir.Constant(_I32, 0))
    with e.if_then(b.and_(b.icmp_signed("<=", k, e.i64(0)), b.not_(accumulate)), "zero_c"):
        _zero_matrix(e, c, m, n, ldc)
    # Strides of op(A) along (rows, k) and op(B) along (k, columns).
    one = e.i64(1)
    a_rs, a_ks = (one, lda) if trans_a else (lda, one)
    b_ks, b_cs = (one, ldb) if trans_b else (ldb, one)
    if direct is not None:
        # Within one KC block and one MC block the packed loops add each element's terms in
        # the same order as the direct tiles, so the two paths give bit-identical results and
        # a product split between threads equals one call whichever path each part takes.
        small = b.icmp_signed("<=", b.mul(b.mul(m, n), k), e.i64(cfg.direct_volume))
        small = b.and_(small, b.and_(b.icmp_signed("<=", k, e.i64(cfg.kc)), b.icmp_signed("<=", m, e.i64(cfg.mc))))
        direct_block = b.append_basic_block("direct")
        packed_block = b.append_basic_block("packed")
        b.cbranch(small, direct_block, packed_block)
        b.position_at_end(direct_block)
        # op(B) = Bᵀ has no rows to load as vectors: each strip is packed into one panel first.
        strip = _packed_strip(e, pack_b, work, bmat, k, ldb) if trans_b else _strip_in_place(e, bmat, ldb)
        _direct_loops(e, direct, m, n, k, a, a_rs, a_ks, strip, c, ldc, accumulate)
        b.branch(exit_block)
        b.position_at_end(packed_block)
    ap, bp = _workspace_pointers(e, work, m, n, k)
    n_step = _balanced_step(e, n, cfg.nc, cfg.nr)
    k_step = _balanced_step(e, k, cfg.kc, cfg.lanes)
    m_step = _balanced_step(e, m, cfg.mc, cfg.mr)
    with e.loop(e.i64(0), n, n_step, "jc") as jc:
        nc = e.min(n_step, b.sub(n, jc))
        with e.loop(e.i64(0), k, k_step, "pc") as pc:
            kc = e.min(k_step, b.sub(k, pc))
            beta = b.or_(accumulate, b.icmp_signed(">", pc, e.i64(0)))
            with e.loop(e.i64(0), nc, cfg.nr, "jp") as jp:
                source = e.at(bmat, b.mul(pc, b_ks), b.mul(b.add(jc, jp), b_cs))
                b.call(pack_b, [e.at(bp, b.mul(jp, kc)), source, kc, e.min(e.i64(cfg.nr), b.sub(nc, jp)), b_ks, b_cs])
            with e.loop(e.i64(0), m, m_step, "ic") as ic:
                mc = e.min(m_step, b.sub(m, ic))
                with e.loop(e.i64(0), mc, cfg.mr, "ip") as ip:
                    source = e.at(a, b.mul(b.add(ic, ip), a_rs), b.mul(pc, a_ks))
                    rows = e.min(e.i64(cfg.mr), b.sub(mc, ip))
                    b.call(pack_a, [e.at(ap, b.mul(ip, kc)), source, kc, rows, a_ks, a_rs])
                with e.loop(e.i64(0), nc, cfg.nr, "jr") as jr:
                    cols = e.min(e.i64(cfg.nr), b.sub(nc, jr))
                    with e.loop(e.i64(0), mc, cfg.mr, "ir") as ir_:
                        rows = e.min(e.i64(cfg.mr), b.sub(mc, ir_))
                        tile = e.at(c, b.mul(b.add(ic, ir_), ldc), b.add(jc, jr))
                        args = [kc, e.at(ap, b.mul(ir_, kc)), e.at(bp, b.mul(jr, kc)), tile, ldc, rows, cols, beta]
                        _call_kernel(e, kernels, rows, args)
    b.branch(exit_block)
    b.position_at_end(exit_block)
    b.ret_void()


def _strip_in_place(e: _Emitter, bmat, ldb):
    """``strip(jr, cols)``: (pointer, row stride, readable width) of op(B)'s columns
    ``jr, ..., jr + cols - 1`` where they lie."""
    return lambda jr, cols: (e.at(bmat, jr), ldb, cols)


def _packed_strip(e: _Emitter, pack_b, work, bmat, k, ldb):
    """``strip(jr, cols)`` for op(B) = Bᵀ: columns ``jr, ...`` of op(B), rows ``jr, ...`` of B
    (contiguous along k), packed into one ``K x NR`` panel at the workspace's first cache
    line and read from there with row stride NR.

    The transposing pack of the blocked path fills it (lanes past ``cols`` zeroed); one panel
    serves every row tile of its strip, so A is read in place and the workspace never needs
    more than ``K * NR`` elements.
    """
    b, cfg = e.b, e.cfg
    address = b.ptrtoint(work, _I64)
    aligned = b.and_(b.add(address, e.i64(_ALIGN - 1)), e.i64(-_ALIGN))
    panel = b.gep(work, [b.sdiv(b.sub(aligned, address), e.i64(cfg.itemsize))])

    def strip(jr, cols):
        # pack(dst, src, kc, valid, ks, ws): B's rows jr, jr+1, ... are the panel's columns.
        b.call(pack_b, [panel, e.at(bmat, b.mul(jr, ldb)), k, cols, e.i64(1), ldb])
        return panel, e.i64(cfg.nr), e.i64(cfg.nr)

    return strip


def _direct_loops(e: _Emitter, kernels, m, n, k, a, a_rs, a_ks, strip, c, ldc, accumulate) -> None:
    """Tiles of C straight from A (and B, unless ``strip`` packs it), without the blocked loops.

    For products this small, packing cost as much as the tiles it fed: a 32 x 10 x 64
    product spent a fifth of its time copying panels, and a 10-column result ran through
    16-column panels padded with zeros. Every operand fits in L1 here, so reading A and B
    in place costs nothing the cache does not already hide. Column blocks are outermost, so
    a ``K x NR`` strip of B (``strip(jr, cols)`` gives its pointer, row stride and the
    values of each row the kernels may read) is reused
    by every row tile while it is in L1.
    """
    b, cfg = e.b, e.cfg
    full, edges = kernels
    with e.loop(e.i64(0), n, cfg.nr, "dj") as jr:
        cols = e.min(e.i64(cfg.nr), b.sub(n, jr))
        bmat, ldb, width = strip(jr, cols)
        with e.loop(e.i64(0), m, cfg.mr, "di") as ir_:
            rows = e.min(e.i64(cfg.mr), b.sub(m, ir_))
            tile = e.at(c, b.mul(ir_, ldc), jr)
            args = [k, e.at(a, b.mul(ir_, a_rs)), a_rs, a_ks, bmat, ldb, width, tile, ldc, rows, cols, accumulate]
            whole = b.icmp_signed("==", rows, e.i64(cfg.mr))
            with b.if_else(whole) as (then, otherwise):
                with then:
                    b.call(full, args)
                with otherwise:
                    _call_kernel(e, edges, rows, args)


def _call_kernel(e: _Emitter, kernels: list[tuple[int, ir.Function]], rows: ir.Value, args: list) -> None:
    """Call the first kernel, in order of increasing height, whose tile holds ``rows`` rows."""
    b = e.b
    after = b.append_basic_block("tile.done")
    for height, kernel in kernels[:-1]:
        call_block = b.append_basic_block(f"tile.r{height}")
        next_block = b.append_basic_block(f"tile.over{height}")
        b.cbranch(b.icmp_signed("<=", rows, e.i64(height)), call_block, next_block)
        b.position_at_end(call_block)
        b.call(kernel, args)
        b.branch(after)
        b.position_at_end(next_block)
    b.call(kernels[-1][1], args)
    b.branch(after)
    b.position_at_end(after)


def _balanced_step(e: _Emitter, size, block: int, multiple: int) -> ir.Value:
    """Split ``size`` into ``ceil(size / block)`` near-equal blocks, each a multiple of ``multiple``.

    Equal blocks avoid a thin last block (K = 784 with KC = 256 gives 4 blocks of 200
    rather than 3 of 256 and one of 16, whose C traffic would cost as much as its FMAs).
    ``block`` is a multiple of ``multiple``, so the step never exceeds it.
    """
    b = e.b
    count = b.sdiv(b.add(size, e.i64(block - 1)), e.i64(block))
    count = b.select(b.icmp_signed(">", count, e.i64(0)), count, e.i64(1))
    step = b.sdiv(b.add(size, b.sub(count, e.i64(1))), count)
    step = b.mul(b.sdiv(b.add(step, e.i64(multiple - 1)), e.i64(multiple)), e.i64(multiple))
    return b.select(b.icmp_signed(">", step, e.i64(0)), step, e.i64(multiple))


def _workspace_pointers(e: _Emitter, work, m, n, k) -> tuple[ir.Value, ir.Value]:
    """Cache-line aligned packed-A and packed-B regions, laid out as `_workspace_parts` says."""
    b, cfg = e.b, e.cfg
    address = b.ptrtoint(work, _I64)
    aligned = b.and_(b.add(address, e.i64(_ALIGN - 1)), e.i64(-_ALIGN))
    ap = b.gep(work, [b.sdiv(b.sub(aligned, address), e.i64(cfg.itemsize))])
    kc = e.min(k, e.i64(cfg.kc))
    rows = b.mul(b.sdiv(b.add(e.min(m, e.i64(cfg.mc)), e.i64(cfg.mr - 1)), e.i64(cfg.mr)), e.i64(cfg.mr))
    line = _ALIGN // cfg.itemsize
    a_elems = b.mul(b.sdiv(b.add(b.mul(rows, kc), e.i64(line - 1)), e.i64(line)), e.i64(line))
    return ap, b.gep(ap, [a_elems])


def _zero_matrix(e: _Emitter, c, m, n, ldc) -> None:
    """C[:m, :n] = 0."""
    b = e.b
    zero = ir.Constant(e.scalar, 0.0)
    with e.loop(e.i64(0), m, 1, "zi") as i:
        row = b.gep(c, [b.mul(i, ldc)])
        with e.loop(e.i64(0), n, 1, "zj") as j:
            b.store(zero, b.gep(row, [j]), align=e.cfg.itemsize)


# --------------------------------------------------------------------------- Python entry


class MatmulKernels:
    """The four transposition variants for one dtype, compiled, with a checked NumPy entry.

    Parameters
    ----------
    dtype : str
        ``"float32"`` or ``"float64"``.
    use_cache : bool
        Use the on-disk object cache.
    config : MatmulConfig, optional
        Tile and block sizes (see `emit_matmul`).

    Examples
    --------
    >>> import numpy as np
    >>> mm = MatmulKernels("float64")
    >>> a, b = np.arange(6.0).reshape(2, 3), np.ones((3, 2))
    >>> mm(a, b)
    array([[ 3.,  3.],
           [12., 12.]])
    """

    def __init__(self, dtype: str = "float32", *, use_cache: bool = True, config: MatmulConfig | None = None):
        import numpy as np

        self.dtype = np.dtype(dtype)
        self.config = _checked_config(self.dtype.name, config)
        module = ir.Module()
        names = {}
        for ta in (False, True):
            for tb in (False, True):
                names[ta, tb] = f"matmul_{self.dtype.name}_{'t' if ta else 'n'}{'t' if tb else 'n'}"
                emit_matmul(module, names[ta, tb], self.dtype.name, ta, tb, self.config)
        self.compiled = compile_ir(module, use_cache=use_cache)
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        argtypes = (i64, i64, i64, ptr, i64, ptr, i64, ptr, i64, ctypes.c_int32, ptr)
        self.functions = {key: self.compiled.function(name, None, *argtypes) for key, name in names.items()}
        self._work = np.empty(0, self.dtype)
        # ctypes releases the GIL during the call: the lock keeps threads off one workspace.
        self._lock = threading.Lock()

    def workspace(self, m: int, n: int, k: int) -> np.ndarray:
        """A workspace for an ``m x n x k`` product, kept and grown between calls.

        Callers of ``functions`` from several threads need one workspace each.
        """
        import numpy as np

        size = matmul_workspace_size(m, n, k, self.dtype.name, self.config)
        if self._work.size < size:
            self._work = np.empty(size, self.dtype)
        return self._work

    def __call__(
        self,
        a: np.ndarray,
        b: np.ndarray,
        out: np.ndarray | None = None,
        *,
        trans_a: bool = False,
        trans_b: bool = False,
        accumulate: bool = False,
    ) -> np.ndarray:
        """Return ``out = op(a) @ op(b)`` (``out += ...`` with ``accumulate``).

        Every argument is checked before native code runs: 2-D arrays of this dtype with
        unit column stride and non-negative row stride, matching shapes, a writable ``out``
        sharing no memory with ``a`` or ``b``.
        """
        import numpy as np

        a_rows, a_cols, lda = self._matrix("a", a)
        b_rows, b_cols, ldb = self._matrix("b", b)
        m, k = (a_cols, a_rows) if trans_a else (a_rows, a_cols)
        k_b, n = (b_cols, b_rows) if trans_b else (b_rows, b_cols)
        if k != k_b:
            raise ValueError(f"inner dimensions differ: op(a) is {m}x{k}, op(b) is {k_b}x{n}")
        if out is None:
            if accumulate:
                raise ValueError("accumulate=True needs an out array to add to")
            out = np.empty((m, n), self.dtype)
        c_rows, c_cols, ldc = self._matrix("out", out)
        if (c_rows, c_cols) != (m, n):
            raise ValueError(f"out must have shape {(m, n)}, got {out.shape}")
        if not out.flags.writeable:
            raise ValueError("out must be writable")
        for label, other in (("a", a), ("b", b)):
            if np.shares_memory(out, other):
                raise ValueError(f"out must not share memory with {label}")
        fn = self.functions[bool(trans_a), bool(trans_b)]
        with self._lock:
            work = self.workspace(m, n, k)
            pointers = a.ctypes.data, b.ctypes.data, out.ctypes.data, work.ctypes.data
            fn(m, n, k, pointers[0], lda, pointers[1], ldb, pointers[2], ldc, int(bool(accumulate)), pointers[3])
        return out

    def _matrix(self, label: str, x: np.ndarray) -> tuple[int, int, int]:
        """Rows, columns and row stride (elements) of a validated matrix argument."""
        import numpy as np

        if not isinstance(x, np.ndarray):
            raise TypeError(f"{label} must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise TypeError(f"{label} must have dtype {self.dtype}, got {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{label} must be 2-D, got shape {x.shape}")
        if not x.flags.aligned:
            raise ValueError(f"{label} must be aligned to its element size")
        rows, cols = x.shape
        size = self.dtype.itemsize
        row_stride, col_stride = x.strides
        if x.size == 0:
            return rows, cols, max(cols, 1)  # no element is read or written
        if cols > 1 and col_stride != size:
            raise ValueError(f"{label} must have contiguous rows (column stride {size} bytes), got {col_stride}")
        if rows <= 1:
            return rows, cols, max(cols, 1)
        if row_stride % size or row_stride // size < cols:
            raise ValueError(f"{label} row stride must be a multiple of {size} and at least a row, got {row_stride}")
        return rows, cols, row_stride // size
