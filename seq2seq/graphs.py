"""The decoder step recorded once as a CUDA graph and replayed (search.cuda_graphs).

On a GPU, a decoder step of a small recurrent model is a few microseconds of work spread
over some fifty kernels, and launching them one by one from Python costs far more than
running them. A CUDA graph records the kernels of one call for fixed shapes and replays
them with a single launch. `GraphedModel` wraps a model (or an ensemble) for search: its
`step` copies the step's inputs into the static buffers of the graph recorded for their
shapes (source memory only when it is not the one already there) and replays it.

Shapes change at every new batch and when search drops finished rows, so graphs are kept per shape,
the `most` last used; they pay off where shapes repeat (batches of `batch_size` sentences, more than
token budgets). Recording one costs a few eager steps: two to warm up (on a side stream, as PyTorch
asks), the capture, and a check that the replay gives what the eager step gave; once a recording
fails the check or cannot be made, every step runs eagerly, and the reason is kept in `notes`.
Without CUDA (`capture=False`) the same buffers are used and the step runs eagerly on them, which is
how the tests check the bookkeeping on a CPU.

Every output of a replay lives in the graph's buffers and is overwritten by the next replay
of that graph: search reads or copies each step's outputs before it takes the next step.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


def tensors_of(tree: Any) -> list[Tensor]:
    """The tensors of nested dataclasses, tuples and lists, in a fixed order."""
    if isinstance(tree, Tensor):
        return [tree]
    if tree is None:
        return []
    if dataclasses.is_dataclass(tree):
        return [t for f in dataclasses.fields(tree) for t in tensors_of(getattr(tree, f.name))]
    if isinstance(tree, (tuple, list)):
        return [t for item in tree for t in tensors_of(item)]
    raise TypeError(f"no tensors expected in {type(tree).__name__}")


def rebuilt(tree: Any, tensors: Iterator[Tensor]) -> Any:
    """`tree` with its tensors replaced, in `tensors_of` order, by those of `tensors`."""
    if isinstance(tree, Tensor):
        return next(tensors)
    if tree is None:
        return None
    if dataclasses.is_dataclass(tree):
        fields = dataclasses.fields(tree)
        changes = {f.name: rebuilt(getattr(tree, f.name), tensors) for f in fields}
        return dataclasses.replace(tree, **changes)
    return type(tree)(rebuilt(item, tensors) for item in tree)


class _Graph:
    """One recorded step: static inputs, the graph (None: eager on the static inputs) and
    its outputs."""

    def __init__(self, step, prev: Tensor, state, memory, capture: bool):
        self.prev, self.state = prev.clone(), rebuilt(state, (t.clone() for t in tensors_of(state)))
        self.memory = rebuilt(memory, (t.clone() for t in tensors_of(memory)))
        self.memory_of = weakref.ref(memory)  # whose memory the buffers hold
        self.step, self.graph, self.outputs, self.note = step, None, None, None
        if capture:
            self._capture()

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # cuBLAS and cuDNN set up their handles and workspaces
                eager = self.step(self.prev, self.state, self.memory)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with _autocast_without_cache(), torch.cuda.graph(graph):
                outputs = self.step(self.prev, self.state, self.memory)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as e:
            self.note = f"not captured ({' '.join(str(e).split())[:120]}); eager"
            return
        graph.replay()
        pairs = zip(tensors_of(outputs), tensors_of(eager))
        if not all(torch.allclose(x.float(), y.float(), atol=1e-4, rtol=1e-3) for x, y in pairs):
            self.note = "the replay differed from the eager step; eager"
            return
        self.graph, self.outputs = graph, outputs

    def __call__(self, prev: Tensor, state, memory):
        if self.note is not None:  # recording failed: plain eager steps
            return self.step(prev, state, memory)
        for static, new in zip([self.prev, *tensors_of(self.state)], [prev, *tensors_of(state)]):
            static.copy_(new)
        if self.memory_of() is not memory:  # a new batch, or rows dropped: copied once
            for static, new in zip(tensors_of(self.memory), tensors_of(memory)):
                static.copy_(new)
            self.memory_of = weakref.ref(memory)
        if self.graph is None:  # no CUDA: the same buffers, stepped eagerly
            return self.step(self.prev, self.state, self.memory)
        self.graph.replay()
        return self.outputs


def _autocast_without_cache():
    """Autocast as it is now, but without its cache of cast weights: a cast made while
    recording must be recorded too (PyTorch's rule for autocast in CUDA graphs)."""
    if not torch.is_autocast_enabled("cuda"):
        return torch.autocast("cuda", enabled=False)
    return torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)


class GraphedModel:
    """A model for search whose `step` replays recorded graphs; `encode` and `vocab` are the
    model's own."""

    def __init__(self, model, capture: bool = True, most: int = 8):
        self.model, self.vocab, self.encode = model, model.vocab, model.encode
        self.capture, self.most = capture, most
        self.graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self.notes: list[str] = []

    def step(self, prev: Tensor, state, memory):
        """prev (N, 1) -> log-probabilities (N, 1, V), next state, weights, as model.step."""
        if self.notes:  # a recording failed: the next would too, so steps stay eager
            return self.model.step(prev, state, memory)
        inputs = [prev, *tensors_of(state), *tensors_of(memory)]
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if (graph := self.graphs.get(key)) is None:
            if len(self.graphs) == self.most:
                self.graphs.popitem(last=False)
            try:
                graph = _Graph(self.model.step, prev, state, memory, self.capture)
            except torch.cuda.OutOfMemoryError:  # search splits the batch: free ours first
                self.graphs.clear()
                raise
            self.graphs[key] = graph
            if graph.note:
                self.notes.append(graph.note)
        self.graphs.move_to_end(key)
        return graph(prev, state, memory)
