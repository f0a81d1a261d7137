"""Compile LLVM IR to native functions in this process, through the on-disk object cache.

Pipeline: parse, verify, optimise (`codegen.target.optimize`), emit object code, read its
symbol table, check every symbol it needs exists in the process, load it into an MCJIT
engine. On a cache hit the first four stages are skipped. ``SYMBACKPROP_DEBUG=1`` prints the
stages and their timings on stderr, ``=2`` also the optimised IR, ``=3`` also the assembly.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir

from codegen import cache, debug, llvm_threads
from codegen.ir_text import module_text
from codegen.objfile import ObjectSymbols, read_symbols
from codegen.target import (
    code_generation,
    emit_assembly,
    engine_target_machine,
    host_spec,
    optimize,
    prepare_module,
    target_machine,
)

__all__ = [
    "CompileOptions",
    "CompileError",
    "UnresolvedSymbolError",
    "CompiledModule",
    "compile_ir",
    "compile_keyed",
    "store_keyed",
    "store_keyed_all",
    "compile_keyed_group",
]

# Symbols that MCJIT's loader (RuntimeDyld) defines itself rather than looking up.
_LOADER_SYMBOLS = frozenset({"_GLOBAL_OFFSET_TABLE_"})

# LLVM contexts and target machines are not thread-safe; compilation is serialised.
_LLVM_LOCK = threading.RLock()


class CompileError(RuntimeError):
    """The IR could not be parsed, verified or compiled."""


class UnresolvedSymbolError(CompileError):
    """The compiled code refers to symbols that this process does not define.

    Attributes
    ----------
    symbols : tuple of str
        The missing symbol names.
    """

    def __init__(self, symbols: tuple[str, ...]):
        self.symbols = symbols
        names = ", ".join(repr(s) for s in symbols)
        super().__init__(
            f"unresolved external symbol(s) {names}: declare only functions that exist in the process, "
            "or load their library first (llvmlite.binding.load_library_permanently)"
        )


@dataclass(frozen=True)
class CompileOptions:
    """Optimisation options; every field is part of the cache key.

    Parameters
    ----------
    speed_level : int
        0 to 3, as ``-O0`` to ``-O3``.
    vectorize : bool
        Run the loop and SLP vectorizers.
    interprocedural : bool
        Run the module pipeline (inlining and interprocedural passes); False runs the
        per-function pipeline on each function alone (see `codegen.target.optimize`).
    as_written : tuple of str
        Name prefixes of functions that get no optimisation passes, only code generation.
    unroll : bool
        Let LLVM unroll loops as its cost model sees fit; False unrolls only the loops whose
        metadata asks for it (``llvm.loop.unroll.count``, see `codegen.emit.emit_loop`).
    codegen_level : int
        1 to 3: how hard code generation works (LLVM's ``CodeGenOptLevel``). Level 1 keeps
        the greedy register allocator and instruction scheduling but leaves out the costlier
        late machine passes, such as duplicating the tails of blocks into their predecessors.

    Examples
    --------
    >>> CompileOptions().cache_token()
    'speed_level=3;vectorize=True'
    >>> CompileOptions(interprocedural=False, as_written=("kernel.",)).cache_token()
    "speed_level=3;vectorize=True;interprocedural=False;as_written=('kernel.',)"
    >>> CompileOptions(unroll=False).cache_token()
    'speed_level=3;vectorize=True;unroll=False'
    >>> CompileOptions(codegen_level=1).cache_token()
    'speed_level=3;vectorize=True;codegen_level=1'
    """

    speed_level: int = 3
    vectorize: bool = True
    interprocedural: bool = True
    as_written: tuple[str, ...] = ()
    unroll: bool = True
    codegen_level: int = 3

    def __post_init__(self) -> None:
        if type(self.speed_level) is not int or not 0 <= self.speed_level <= 3:
            raise ValueError(f"speed_level must be an int from 0 to 3, got {self.speed_level!r}")
        if type(self.codegen_level) is not int or not 1 <= self.codegen_level <= 3:
            raise ValueError(f"codegen_level must be an int from 1 to 3, got {self.codegen_level!r}")
        for name in ("vectorize", "interprocedural", "unroll"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.as_written, tuple) or not all(isinstance(p, str) and p for p in self.as_written):
            raise TypeError(f"as_written must be a tuple of non-empty strings, got {self.as_written!r}")
        if self.as_written and self.interprocedural:
            raise ValueError("as_written needs interprocedural=False: the module pipeline would inline those functions")

    def cache_token(self) -> str:
        """The options as one string, for the cache key (fields at their defaults after the
        first two are left out, so that the default options keep their key)."""
        token = f"speed_level={self.speed_level};vectorize={self.vectorize}"
        if not self.interprocedural:
            token += ";interprocedural=False"
        if self.as_written:
            token += f";as_written={self.as_written!r}"
        if not self.unroll:
            token += ";unroll=False"
        if self.codegen_level != 3:
            token += f";codegen_level={self.codegen_level}"
        return token

    def optimize(self, module_ref: llvm.ModuleRef) -> None:
        """Optimise ``module_ref`` in place with these options."""
        optimize(
            module_ref,
            self.speed_level,
            vectorize=self.vectorize,
            interprocedural=self.interprocedural,
            as_written=self.as_written,
            unroll=self.unroll,
        )


class CompiledModule:
    """Native code of an LLVM module, or of modules compiled apart (`compile_ir` with a list
    of texts), loaded into one execution engine that this object owns and that links them.

    The functions' addresses stay valid exactly as long as this object lives; callables
    from `function` keep it alive. Do not construct directly: use `compile_ir`.

    Attributes
    ----------
    functions : tuple of str
        Names of the functions defined by the module (by all of them).
    from_cache : bool
        True if all the object code was loaded from the disk cache rather than compiled.
    keys : tuple of str
        Cache keys of the object code, one per module.
    objects : tuple of bytes
        The object code, one per module.
    timings : dict of str to float
        Seconds spent in each stage.
    """

    def __init__(
        self,
        ir_texts: Sequence[str],
        options: Sequence[CompileOptions],
        objects: Sequence[tuple[bytes, ObjectSymbols]],
        engine: llvm.ExecutionEngine,
        keys: Sequence[str],
        from_cache: bool,
        timings: dict[str, float],
        optimized_ir: Sequence[str | None] = (),
    ):
        self._ir_texts = tuple(ir_texts)
        self._options = tuple(options)
        self._engine = engine
        self._optimized_ir = None if not optimized_ir or None in optimized_ir else "\n".join(optimized_ir)
        self._assembly: str | None = None
        self.objects = tuple(code for code, _ in objects)
        self.functions = tuple(name for _, symbols in objects for name in symbols.functions)
        self.keys = tuple(keys)
        self.from_cache = from_cache
        self.timings = timings

    @property
    def options(self) -> tuple[CompileOptions, ...]:
        """The options each module was (or would be) optimised with, one per module."""
        return self._options

    @property
    def object_code(self) -> bytes:
        """The object code of a module compiled whole (see `objects` for one in parts)."""
        return self._single(self.objects, "objects")

    @property
    def key(self) -> str:
        """The cache key of a module compiled whole (see `keys` for one in parts)."""
        return self._single(self.keys, "keys")

    def _single(self, values: tuple, plural: str):
        if len(values) != 1:
            raise ValueError(f"this code was compiled as {len(values)} modules: see .{plural}")
        return values[0]

    def __repr__(self) -> str:
        source = "cache" if self.from_cache else "compiled"
        parts = f", {len(self.keys)} modules" if len(self.keys) > 1 else ""
        return f"<CompiledModule {', '.join(self.functions)} ({source}{parts}, key {self.keys[0][:12]})>"

    def address(self, name: str) -> int:
        """Return the address of function ``name``; valid while this object lives.

        Raises
        ------
        KeyError
            If the module defines no function of that name.
        """
        if name not in self.functions:
            raise KeyError(f"no function {name!r} in this module; it defines {list(self.functions)}")
        address = self._engine.get_function_address(name)
        if not address:
            raise KeyError(f"function {name!r} has no address in the execution engine")
        return address

    def function(self, name: str, restype, *argtypes) -> ctypes._CFuncPtr:
        """Return a ctypes callable for function ``name`` that keeps this module alive.

        Parameters
        ----------
        name : str
            Function name.
        restype : ctypes type or None
            Return type (None for void).
        *argtypes : ctypes types
            Parameter types, which must match the IR signature.
        """
        prototype = ctypes.CFUNCTYPE(restype, *argtypes)
        fn = prototype(self.address(name))
        fn._compiled_module = self
        return fn

    @property
    def ir(self) -> str:
        """The LLVM IR as given, before optimisation (the modules one after the other, each
        opening with its ``; ModuleID`` line)."""
        return "\n".join(self._ir_texts)

    @property
    def optimized_ir(self) -> str:
        """The LLVM IR after optimisation (recomputed on first access after a cache hit)."""
        if self._optimized_ir is None:
            self._inspect()
        return self._optimized_ir

    @property
    def assembly(self) -> str:
        """The host assembly of the optimised module (computed on first access)."""
        if self._assembly is None:
            self._inspect()
        return self._assembly

    def _inspect(self) -> None:
        """Rebuild the optimised modules from the IR; code generation mutates a module,
        hence a fresh copy."""
        optimized, assembly = [], []
        with _LLVM_LOCK:
            for text, options in zip(self._ir_texts, self._options):
                module_ref = _parse_and_verify(text)
                options.optimize(module_ref)
                optimized.append(str(module_ref))
                assembly.append(emit_assembly(module_ref))
        if self._optimized_ir is None:
            self._optimized_ir = "\n".join(optimized)
        self._assembly = "\n".join(assembly)


def _parse_and_verify(ir_text: str) -> llvm.ModuleRef:
    try:
        module_ref = llvm.parse_assembly(ir_text)
        module_ref.verify()
    except RuntimeError as exc:
        raise CompileError(f"invalid LLVM IR: {exc}") from exc
    return module_ref


def _ir_text(module: ir.Module | str) -> str:
    if isinstance(module, ir.Module):
        return module_text(module)
    if isinstance(module, str):
        return module
    raise TypeError(f"module must be an llvmlite.ir.Module or LLVM IR text, got {type(module).__name__}")


def _ir_texts(modules) -> list[str]:
    """One module's text, or a list of several modules' texts."""
    if isinstance(modules, (list, tuple)):
        if not modules:
            raise ValueError("no modules to compile: the list of IR texts is empty")
        return [_ir_text(module) for module in modules]
    return [_ir_text(modules)]


def _compile_object(ir_text: str, options: CompileOptions, timings: dict[str, float]) -> tuple[bytes, str | None]:
    """Return the object code of the IR and, when debugging at level 2+, the optimised IR."""
    with debug.stage("parse", timings):
        module_ref = _parse_and_verify(ir_text)
    with debug.stage("optimize", timings):
        options.optimize(module_ref)
    optimized_ir = str(module_ref) if debug.debug_level() >= 2 else None
    with debug.stage("codegen", timings), code_generation():
        object_code = target_machine(host_spec(), options.codegen_level).emit_object(module_ref)
    return object_code, optimized_ir


def _compile_objects(ir_texts: list[str], options: list[CompileOptions], timings: dict[str, float]) -> list:
    """`_compile_object` of each text with its options: in parallel threads where they are
    available (`codegen.llvm_threads`), else one after the other."""
    if len(ir_texts) > 1 and llvm_threads.available():
        with debug.stage(f"compile {len(ir_texts)} modules in parallel", timings):
            return llvm_threads.compile_modules(ir_texts, options, keep_ir=debug.debug_level() >= 2)
    return [_compile_object(text, each, timings) for text, each in zip(ir_texts, options)]


def _new_engine() -> llvm.ExecutionEngine:
    """An engine with an empty module; its creation also makes the process's symbols visible to LLVM."""
    machine = engine_target_machine()
    return llvm.create_mcjit_compiler(prepare_module(llvm.parse_assembly(""), machine), machine)


def compile_ir(
    module: ir.Module | str | Sequence[ir.Module | str],
    *,
    options: CompileOptions | None = None,
    use_cache: bool = True,
    before_load: Callable[[], object] | None = None,
) -> CompiledModule:
    """Compile LLVM IR for the host CPU and load it, using the disk cache.

    Parameters
    ----------
    module : llvmlite.ir.Module or str, or a list of them
        The module, or its IR text. A list of modules that call each other's functions
        (see `codegen.split`) compiles in parallel threads, each module cached under its own
        key, and loads into one engine that links them.
    options : CompileOptions or a list of them, optional
        Optimisation options, or one for each module of a list; defaults to
        ``CompileOptions()``.
    use_cache : bool
        Read and write the disk cache (``SYMBACKPROP_CACHE=0`` turns it off regardless).
    before_load : callable, optional
        Called once the object code is ready (compiled or from the cache) and before it is
        loaded: to load what it links to, such as the kernel library's variants, which can
        then compile while this module does.

    Returns
    -------
    CompiledModule

    Raises
    ------
    CompileError
        If the IR does not parse or verify.
    UnresolvedSymbolError
        If the code needs a symbol the process does not define (checked before loading,
        since the loader would otherwise crash).

    Examples
    --------
    >>> import ctypes
    >>> cm = compile_ir("define i64 @twice(i64 %x) { %y = add i64 %x, %x\\n ret i64 %y }", use_cache=False)
    >>> cm.function("twice", ctypes.c_int64, ctypes.c_int64)(21)
    42
    >>> pair = compile_ir(["declare i64 @twice(i64)\\ndefine i64 @four_times(i64 %x) {"
    ...                    " %y = call i64 @twice(i64 %x)\\n %z = call i64 @twice(i64 %y)\\n ret i64 %z }",
    ...                    "define i64 @twice(i64 %x) { %y = add i64 %x, %x\\n ret i64 %y }"], use_cache=False)
    >>> pair.function("four_times", ctypes.c_int64, ctypes.c_int64)(5), len(pair.objects)
    (20, 2)
    """
    ir_texts = _ir_texts(module)
    options = _options_of_each(options, len(ir_texts))
    keys = [cache.cache_key(text, host_spec(), each.cache_token()) for text, each in zip(ir_texts, options)]
    return _compile_or_load(keys, lambda: ir_texts, options, use_cache, known_ir=ir_texts, before_load=before_load)


def compile_keyed(
    identity: str, build, *, options: CompileOptions | None = None, use_cache: bool = True
) -> CompiledModule:
    """Like `compile_ir`, but cached under ``identity`` (a string that determines the IR),
    so that a hit loads object code without building the IR at all.

    ``build()`` returns the module or its text; it is called only on a miss. Use it for IR
    that is expensive to produce and determined by something cheaper, such as the source
    of the code that emits it.
    """
    return _compile_or_load(
        [keyed_cache_key(identity, options)], lambda: [_ir_text(build())], [_checked_options(options)], use_cache
    )


def store_keyed(identity: str, build, *, options: CompileOptions | None = None) -> bool:
    """Compile the IR of ``build()`` into the disk cache under ``identity`` (as `compile_keyed`
    files it) unless it is there already, and load nothing; return whether it compiled.

    For code compiled for another process (a helper filling the cache) or that calls
    functions this process has not loaded yet. Nothing happens when the cache is off.
    """
    return bool(store_keyed_all({identity: build}, options=options))


def store_keyed_all(
    builds: dict[str, Callable[[], ir.Module | str]], *, options: CompileOptions | None = None, threads: int = 2
) -> list[str]:
    """`store_keyed` for each identity of ``builds``, ``threads`` modules at a time in
    parallel threads; return the identities compiled (those the cache lacked).

    >>> store_keyed_all({}) == []
    True
    """
    options = _checked_options(options)
    if not cache.cache_enabled():
        return []
    identities = list(builds)
    keys = [keyed_cache_key(identity, options) for identity in identities]
    with _LLVM_LOCK:
        objects = [_cached_object(key) for key in keys]
        missing, _ = _compile_missing(
            objects, keys, _builder(identities, builds), [options] * len(keys), {}, threads, store=True
        )
    return [identities[index] for index in missing]


def _builder(identities: list[str], builds: dict) -> Callable[[int], str]:
    """The IR text of the ``index``-th identity's module, built when asked for."""
    return lambda index: _ir_text(builds[identities[index]]())


def _compile_missing(
    objects: list,
    keys: list[str],
    text_of: Callable[[int], str],
    options: list[CompileOptions],
    timings,
    threads: int,
    store: bool,
) -> tuple[list[int], list[str | None]]:
    """Fill the Nones of ``objects`` with the code of the modules whose IR ``text_of(index)``
    gives, compiled with ``options[index]``, ``threads`` at a time (`_compile_objects`), and
    stored in the cache under ``keys`` if asked; return their positions and each module's
    optimised IR (when debugging keeps it). Call with `_LLVM_LOCK` held."""
    missing = [index for index, entry in enumerate(objects) if entry is None]
    optimized_ir: list[str | None] = [None] * len(objects)
    step = max(1, threads)
    for start in range(0, len(missing), step):
        batch = missing[start : start + step]
        compiled = _compile_objects([text_of(index) for index in batch], [options[index] for index in batch], timings)
        for index, (object_code, optimized) in zip(batch, compiled):
            objects[index], optimized_ir[index] = (object_code, read_symbols(object_code)), optimized
            if store:
                cache.store(keys[index], object_code)
    return missing, optimized_ir


def keyed_cache_key(identity: str, options: CompileOptions | None = None) -> str:
    """The cache key under which `compile_keyed` files the code of ``identity``."""
    return cache.cache_key(f"keyed:{identity}", host_spec(), _checked_options(options).cache_token())


def _checked_options(options) -> CompileOptions:
    options = CompileOptions() if options is None else options
    if not isinstance(options, CompileOptions):
        raise TypeError(f"options must be a CompileOptions, got {type(options).__name__}")
    return options


def _options_of_each(options, count: int) -> list[CompileOptions]:
    """One `CompileOptions` per module: the same for all, or one given for each."""
    if not isinstance(options, (list, tuple)):
        return [_checked_options(options)] * count
    if len(options) != count:
        raise ValueError(f"options for {len(options)} modules given to compile {count}")
    return [_checked_options(each) for each in options]


def _compile_or_load(
    keys: list[str],
    make_ir: Callable[[], list[str]],
    options: list[CompileOptions],
    use_cache: bool,
    known_ir: list[str] | None = None,
    before_load=None,
) -> CompiledModule:
    """The modules of ``keys`` loaded into one engine: from the cache where it has them,
    else compiled from ``make_ir()`` (their texts, made only on a miss), each with its
    ``options``."""
    use_cache = bool(use_cache) and cache.cache_enabled()
    timings: dict[str, float] = {}
    ir_texts = known_ir or []  # empty for a keyed module loaded from the cache: its IR was never built
    with _LLVM_LOCK:
        debug.log(1, f"module {keys[0][:16]}: {'; '.join(dict.fromkeys(o.cache_token() for o in options))}")
        objects = [None] * len(keys)
        if use_cache:
            with debug.stage("cache", timings):
                objects = [_cached_object(key) for key in keys]
        if None in objects:
            ir_texts = ir_texts or make_ir()
            debug.log(1, f"module {keys[0][:16]}: {sum(len(t) for t in ir_texts)} characters of IR")
        missing, optimized_ir = _compile_missing(
            objects, keys, lambda index: ir_texts[index], options, timings, threads=len(keys), store=use_cache
        )
    if before_load is not None:  # outside the lock: it may compile modules of its own
        with debug.stage("before load", timings):
            before_load()
    with _LLVM_LOCK:
        with debug.stage("load", timings):
            engine = _load_objects(objects)
    compiled = CompiledModule(ir_texts, options, objects, engine, keys, not missing, timings, optimized_ir)
    if debug.debug_level() >= 2:
        debug.log(2, f"optimized IR:\n{compiled.optimized_ir}")
    if debug.debug_level() >= 3:
        debug.log(3, f"assembly:\n{compiled.assembly}")
    return compiled


def compile_keyed_group(
    builds: dict[str, Callable[[], ir.Module | str]],
    *,
    options: CompileOptions | None = None,
    use_cache: bool = True,
    threads: int = 2,
) -> list[CompiledModule]:
    """`compile_keyed` for several identities at once, loaded into one execution engine,
    which links them: the modules may call each other's functions. Each module's object
    code comes from the cache, or is compiled from its build (``threads`` at a time, in
    parallel threads) and stored. One engine for a group saves about 0.7 ms per module over
    one engine each (a warm start of a training step loads six of the kernel library's
    modules).

    Raises
    ------
    UnresolvedSymbolError
        If the modules need a symbol that neither they nor the process define (checked
        before anything is loaded).
    """
    options = _checked_options(options)
    use_cache = bool(use_cache) and cache.cache_enabled()
    identities = list(builds)
    keys = [keyed_cache_key(identity, options) for identity in identities]
    timings: dict[str, float] = {}
    with _LLVM_LOCK:
        objects = [_cached_object(key) if use_cache else None for key in keys]
        missing, _ = _compile_missing(
            objects, keys, _builder(identities, builds), [options] * len(keys), timings, threads, store=use_cache
        )
        with debug.stage("load", timings):
            engine = _load_objects(objects)
    return [
        CompiledModule([""], [options], [entry], engine, [key], index not in missing, timings)
        for index, (key, entry) in enumerate(zip(keys, objects))
    ]


def _load_objects(objects: list[tuple[bytes, ObjectSymbols]]) -> llvm.ExecutionEngine:
    """A new engine holding ``objects``, which may call each other's functions; every other
    symbol they need must exist in the process, checked before any is loaded (the loader
    would otherwise crash). Call with `_LLVM_LOCK` held."""
    engine = _new_engine()  # first: it makes the process's own symbols visible
    defined = {name for _, symbols in objects for name in symbols.functions}
    needed = {name for _, symbols in objects for name in symbols.undefined}
    missing = tuple(
        sorted(
            name for name in needed - defined if name not in _LOADER_SYMBOLS and llvm.address_of_symbol(name) is None
        )
    )
    if missing:
        raise UnresolvedSymbolError(missing)
    for object_code, _ in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(object_code))
    engine.finalize_object()
    return engine


def _cached_object(key: str) -> tuple[bytes, ObjectSymbols] | None:
    """Return cached object code and its symbols, or None on a miss or a damaged entry."""
    object_code = cache.load(key, validate=read_symbols)
    return None if object_code is None else (object_code, read_symbols(object_code))
