"""What an LMU needs to know of its hidden component (a Keras RNN cell or layer).

An ``LMUCell``'s states are ``[memory, *hidden_states]``, one tensor each, whatever the
nesting of the hidden cell's own states (``StackedRNNCells([LSTMCell, LSTMCell])``
holds ``[[h1, c1], [h2, c2]]``). These functions flatten the hidden cell's states,
nest them again for the cell, find its previous output among them (fed back to the
memory with ``hidden_to_memory``), and find the cells whose dropout masks are made
once per sequence and the layers that draw random numbers at every call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
from keras import tree
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell


def state_sizes(cell: keras.layers.Layer) -> list[int]:
    """Sizes of the cell's states, flattened in the order of ``keras.tree.flatten``."""
    return [int(size) for size in tree.flatten(cell.state_size)]


def nest_states(cell: keras.layers.Layer, flat_states: list[Any]) -> list[Any]:
    """The flat states as the cell takes them: plain lists, nested as ``cell.state_size``."""
    remaining = iter(flat_states)

    def nest(sizes):
        if tree.is_nested(sizes):
            return [nest(size) for size in sizes]
        return next(remaining)

    nested = nest(cell.state_size)
    return nested if isinstance(nested, list) else [nested]


def flatten_states(states: Any) -> list[Any]:
    """A cell's returned states (a tensor, or nested lists of them) as a flat list."""
    return tree.flatten(states)


def output_size(cell: keras.layers.Layer) -> int:
    """Number of features the RNN cell outputs (``output_size``, else its first state's)."""
    size = getattr(cell, "output_size", None)
    return int(size) if size is not None else state_sizes(cell)[0]


def output_state_index(cell: keras.layers.Layer) -> int:
    """Index, among the cell's flat states, of the state that equals its output.

    Keras's cells return their output as their first state (``h`` of an LSTM); a
    ``StackedRNNCells`` outputs its last cell's output.
    """
    if isinstance(cell, keras.layers.StackedRNNCells):
        before_last = sum(len(state_sizes(inner)) for inner in cell.cells[:-1])
        return before_last + output_state_index(cell.cells[-1])
    return 0


def dropout_cells(
    cell: keras.layers.Layer | None, input_size: int
) -> Iterator[tuple[DropoutRNNCell, int, int]]:
    """``(dropout_cell, input_size, first_state_size)`` for the cells that make dropout
    masks: ``cell`` itself, or those within a ``StackedRNNCells`` (each one's input is
    the previous one's output)."""
    if isinstance(cell, DropoutRNNCell):
        yield cell, input_size, state_sizes(cell)[0]
    if isinstance(cell, keras.layers.StackedRNNCells):
        for inner in cell.cells:
            yield from dropout_cells(inner, input_size)
            input_size = output_size(inner)


def calls_directly(layer: keras.layers.Layer, dtype_policy: Any) -> bool:
    """Whether ``layer.call(...)`` may stand for ``layer(...)`` inside the call of a
    layer with ``dtype_policy``, in an eager loop over the steps (PyTorch's).

    ``Layer.__call__`` builds the layer, converts and casts its inputs (given here in
    its compute dtype), opens the autocast scope (the caller's, for the same dtype
    policy), resolves ``training`` (given here, so ``call`` must take it) and applies
    activity regularization, rematerialization and quantization (checked). At every
    step on PyTorch it costs as much as a small cell's arithmetic: a
    ``SimpleRNNCell(212)``'s step at batch 100 took 283 us through ``__call__`` and 142
    by ``call``, forward only.
    """
    return (
        layer.built
        and getattr(layer, "_call_has_training_arg", False)
        and layer.activity_regularizer is None
        and getattr(layer, "_remat_mode", None) is None
        and layer.dtype_policy.quantization_mode is None
        and layer.dtype_policy.name == dtype_policy.name
    )


def per_call_seed_generators(layer: keras.layers.Layer | None) -> list:
    """The seed generators of the layers within ``layer`` (itself included) that draw
    random numbers when called, as ``Dropout`` does; those of a ``DropoutRNNCell``,
    whose dropout masks are made once per sequence before the loop over the steps, do
    not count."""
    if layer is None:
        return []
    return [
        generator
        for inner in layer._flatten_layers(include_self=True, recursive=True)
        if not isinstance(inner, DropoutRNNCell)
        for generator in inner._seed_generators
    ]


def variables_assigned_per_call(layer: keras.layers.Layer | None) -> list:
    """The variables that the layers within ``layer`` (itself included) may assign when
    called in training: the states of :func:`per_call_seed_generators`, and the
    non-trainable variables of trainable layers, as ``BatchNormalization``'s moving
    statistics (a frozen layer's weights are never assigned)."""
    if layer is None:
        return []
    variables = [generator.state for generator in per_call_seed_generators(layer)]
    for inner in layer._flatten_layers(include_self=True, recursive=True):
        if inner.trainable:
            variables.extend(inner._non_trainable_variables)
    unique = {id(variable): variable for variable in variables}
    return list(unique.values())
