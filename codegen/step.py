"""Compiled training steps: forward, backward and the optimizer update in one native call."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np

from symbackprop.autodiff import grad
from symbackprop.errors import GraphError
from symbackprop.graph import Tensor, topological_order
from symbackprop.random import step_number
from symbackprop.rewrite import simplify

from .compile import cached_build, check_inputs, compile_program
from .emit import emit_program
from .epoch import emit_epoch
from .expr import FAST
from .lower import lower
from .profile import KernelProfile
from .runtime import BoundProgram, CallChecks, Inspectable, address, native_entry


class OptimizerState(dict):
    """The optimizer's state arrays, keyed ``(param, name)``.

    Compiled code reads and writes them by address, so an array put in their place must
    have the same shape; it is copied into the state's dtype and a contiguous layout.

    >>> import numpy as np
    >>> state = OptimizerState({("W", "v"): np.zeros(2, np.float32)})
    >>> state["W", "v"] = [1, 2]
    >>> state["W", "v"].dtype
    dtype('float32')
    """

    def __setitem__(self, key, value) -> None:
        if key not in self:
            raise KeyError(f"no optimizer state {key!r}; the state holds {list(self)}")
        old = self[key]
        array = np.asarray(value)
        if array.shape != old.shape:
            raise GraphError(f"optimizer state {key!r} has shape {old.shape}, got an array of shape {array.shape}")
        super().__setitem__(key, np.array(array, dtype=old.dtype, order="C", copy=True))

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


class CompiledStep(Inspectable):
    """One training step as native code: ``step(*batch) -> loss``, params updated in place.

    See :func:`symbackprop.compile_step`. The optimizer's state (momenta, moments) is kept
    in ``state`` and the number of steps taken in ``steps``. When the loss or the optimizer
    reads the step number (:func:`symbackprop.step_number`: dropout masks, Adam's bias
    correction), every step and every minibatch of an epoch is fed its number, from 1.
    """

    def __init__(
        self,
        loss: Tensor,
        inputs: Sequence[Tensor],
        params: Sequence[Tensor],
        optimizer,
        *,
        fast_math: bool = True,
        profile: bool = False,
    ):
        if not isinstance(loss, Tensor) or loss.shape != ():
            raise GraphError(f"compile_step: the loss must be a scalar tensor, got {loss!r}")
        self.params = _check_params(params)
        # Params the loss reads but the step does not train: read from their .value at every
        # call, like sb.compile's params (a layer kept fixed, the biases of a worked example).
        self.frozen = [n for n in topological_order([loss]) if n.op == "param" and n not in self.params]
        self.optimizer = optimizer
        self.state = OptimizerState(optimizer.init_states(self.params))
        self.state_inputs, self.step_input = optimizer.step_inputs(self.params)
        self.step_input = _step_number_read(loss, inputs, self.step_input)
        fed = [self.step_input] if self.step_input is not None else []
        self.inputs = check_inputs([loss], [*inputs, *fed])[: len(inputs)]
        self.steps = 0
        extra_inputs = list(self.state_inputs.values()) + ([self.step_input] if self.step_input is not None else [])

        def build():
            update = optimizer.step_graph(self.params, grad(loss, self.params), step=self.step_input)
            targets = [loss, *update.new_values.values(), *update.new_states.values()]
            replaced = [*update.new_values, *(update.state_inputs[key] for key in update.new_states)]
            new_loss, *new_updates = simplify(targets).outputs
            in_place = dict(zip(new_updates, replaced))
            program = lower([new_loss], self.inputs + extra_inputs, in_place, reassociate=fast_math)
            module = emit_program(program, flags=FAST if fast_math else (), profile=profile)
            slots = {b.node: b.slot for b in program.buffers if b.node is not None}
            step_slot = slots.get(self.step_input) if self.step_input is not None else None
            input_slots = [slots[n] for n in self.inputs]
            emit_epoch(
                module,
                module.get_global("run"),
                input_slots,
                step_slot,
                program.outputs[0].buffer.slot,
                loss.dtype,
                row_bytes=[_example_bytes(node) for node in self.inputs],
            )
            return program, module

        # The key is taken before differentiating, from the loss and the optimizer's rules: a
        # warm start then skips the gradient as well as the rewrites and the code generation.
        options = f"fast_math={fast_math};{optimizer.key};trained={len(self.params)}" + (";profile" if profile else "")
        self.program, ir_texts = cached_build(
            "step", [loss], self.inputs + extra_inputs, self.params + self.frozen, options, build
        )
        self.compiled = compile_program(self.program, ir_texts)
        self.bound = BoundProgram(self.program, native_entry(self.compiled), self.compiled)
        #: Kernel timings (`codegen.profile.KernelProfile`) when compiled with ``profile=True``;
        #: the minibatches of an epoch count like single steps.
        self.profile = KernelProfile(self.program, self.compiled) if profile else None
        # epoch(table, batch, count, order, sources, row_bytes, step counter, losses)
        self._epoch = self.compiled.function(
            "epoch", ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, *[ctypes.c_void_p] * 5
        )
        self.checks = CallChecks(self.inputs, self.program.index_checks)
        buffers = {b.node: b for b in self.program.buffers if b.node is not None}
        self._input_slots = [buffers[n].slot for n in self.inputs]
        # Bound at every call, as the user may replace them: params (and frozen ones) by their
        # .value, optimizer states by their entry in ``state``. Absent ones the loss never reads.
        self._param_slots = [(buffers[p].slot, p) for p in self.params + self.frozen if p in buffers]
        self._state_slots = [(buffers[n].slot, key) for key, n in self.state_inputs.items() if n in buffers]
        # Bound once: the step number and the loss, which the caller reads as a float.
        self._step_value = np.zeros((), dtype=np.float64)
        if self.step_input is not None and self.step_input in buffers:
            self.bound.bind(buffers[self.step_input], self._step_value)
        loss_view = self.program.outputs[0]
        self._loss = np.zeros((), dtype=loss_view.dtype)
        self.bound.bind(loss_view.buffer, self._loss)
        # The epoch's own arguments, allocated once: the data's addresses and row sizes, the
        # step counter and the loss total; its data set's checks, apart from a step's.
        self._epoch_checks = CallChecks(self.inputs, self.program.index_checks)
        self._epoch_arguments = (
            np.zeros(len(self.inputs), np.uint64),
            np.zeros(len(self.inputs), np.int64),
            np.zeros(1),
            np.zeros(1),
        )
        self._epoch_addresses = [address(a) for a in self._epoch_arguments]
        self._staging_key: tuple | None = None
        self._staging_arrays: list[np.ndarray] = []

    def _bind_model(self, batch: int) -> None:
        """Point the table at the params and the optimizer state; arrays that are still the
        ones bound last time keep their entries."""
        bound = self.bound
        bound.prepare(batch)
        held, state = bound.held, self.state
        for slot, param in self._param_slots:
            if held[slot] is not param.value:
                bound.bind_slot(slot, param.value)
        for slot, key in self._state_slots:
            if held[slot] is not state[key]:
                bound.bind_slot(slot, state[key])

    def __call__(self, *arrays) -> float:
        """One step on one minibatch; returns the loss before the update."""
        arrays, batch = self.checks(arrays)
        self._bind_model(batch)
        bound = self.bound
        for slot, array in zip(self._input_slots, arrays):
            if bound.held[slot] is not array:
                bound.bind_slot(slot, array)
        self.steps += 1
        self._step_value[()] = self.steps
        self.bound.run(batch)
        return float(self._loss)

    def epoch(self, *arrays, batch_size: int = 32, shuffle: bool = True, seed: int | None = None) -> float:
        """Steps over every minibatch of the data in one native call; returns the mean loss.

        ``arrays`` hold the whole data set, one per input, with the examples along the
        batch axis. With ``shuffle`` the order is a permutation drawn from ``seed``.
        """
        for node in self.inputs:
            if not node.shape or node.shape[0] is not None:
                raise GraphError(f"epoch: input {node.label!r} needs the batch dimension first, got {node.shape}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise GraphError(f"epoch: batch_size must be a positive int, got {batch_size!r}")
        arrays, count = self._epoch_checks(arrays)
        batch = min(int(batch_size), count)
        order = np.random.default_rng(seed).permutation(count) if shuffle else np.arange(count)
        order = order.astype(np.int64, copy=False)
        self._bind_model(batch)
        bound = self.bound
        for slot, array in zip(self._input_slots, self._staging(batch, arrays)):
            if bound.held[slot] is not array:
                bound.bind_slot(slot, array)
        sources, row_bytes, counter, losses = self._epoch_arguments
        sources[:] = [address(a) for a in arrays]
        row_bytes[:] = [a[0].nbytes if a.ndim > 1 else a.itemsize for a in arrays]
        counter[0], losses[0] = self.steps, 0.0
        status = self._epoch(self.bound.table_address, batch, count, address(order), *self._epoch_addresses)
        self.steps = int(counter[0])
        self._step_value[()] = self.steps
        if status:
            self.bound.raise_status(status)
        return float(losses[0] / count)

    def _staging(self, batch: int, arrays) -> list[np.ndarray]:
        """Buffers for one minibatch of each input, which the epoch's native loop fills; kept
        while the batch size and the data's rows stay the same."""
        key = (batch, [(a.shape[1:], a.dtype) for a in arrays])
        if self._staging_key != key:
            self._staging_arrays = [np.empty((batch, *a.shape[1:]), dtype=a.dtype) for a in arrays]
            self._staging_key = key
        return self._staging_arrays


def _step_number_read(loss: Tensor, inputs: Sequence[Tensor], optimizer_step: Tensor | None) -> Tensor | None:
    """The step number input the step feeds itself: the optimizer's (Adam's ``t``), or
    :func:`~symbackprop.random.step_number` when the loss reads it (dropout masks)."""
    step = step_number()
    if any(node is step for node in inputs):
        raise GraphError(
            "compile_step: the step number 'step' is fed by the training step itself (1, 2, ...); "
            "leave it out of inputs"
        )
    if optimizer_step is not None:
        return optimizer_step
    return step if step in topological_order([loss]) else None


def _check_params(params) -> list[Tensor]:
    params = list(params)
    for position, p in enumerate(params):
        if not isinstance(p, Tensor) or p.op != "param":
            raise GraphError(f"params[{position}] must be a tensor made by sb.param, got {p!r}")
    if len(set(params)) != len(params):
        raise GraphError(f"params {[p.label for p in params]} list a param twice")
    for i, p in enumerate(params):
        for q in params[:i]:
            if np.shares_memory(p.value, q.value):
                raise GraphError(f"params {q.label!r} and {p.label!r} share memory; give each its own array")
    return params


def _example_bytes(node: Tensor) -> int | None:
    """Bytes of one example of a batched input whose other dimensions are fixed, else None."""
    rest = node.shape[1:]
    if not all(isinstance(d, int) for d in rest):
        return None
    return int(np.prod(rest, dtype=np.int64)) * np.dtype(node.dtype).itemsize
