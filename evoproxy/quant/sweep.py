"""Post-training-quantization quality (metric) of many bit configurations of one model in one sweep that
computes each intermediate result once for all the configurations that agree on what it depends on.

The model is traced with torch.fx. A graph node's output, on a given batch, depends only on the
bits of the quantizable layers at and upstream of it; so are the BatchNorm statistics re-estimated
at it and the activation range calibrated at it. The sweep runs `quantize_model`'s passes
(BatchNorm re-estimation, activation ranges) and the metric's evaluation batch by batch, visiting
the configurations in sorted order within each batch, and keeps a node's output from the previous
configuration when its layers' bits are the same. Sorted configurations share their leading layers:
on ResNet-20 with 3 bit-widths per layer, a build of 1000 configurations (`bench.build_order`)
computes 30 % fewer multiply-accumulates (`benchmarks/bench_build_speed.py` counts them).
Every operation runs on the same inputs as in `quantize_model` and `Metric.measure`, so every value
is theirs to the bit."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from functools import reduce

import torch
from torch import fx, nn

from ..model import EVAL_BATCH, LayerInfo, metric_of, paced_batches, selected
from ..model.layers import OutputSelector
from .fakequant import BN_BATCH, WeightCache, quantize_input, start_reestimation

# One configuration: (weight bits, activation bits) of every registry layer.
Config = tuple[tuple[int, int], ...]
_INPLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.imatmul,
    operator.setitem,
}


class Untraceable(Exception):
    """The model cannot be swept: torch.fx cannot trace it, it changes a tensor in place, it takes
    more than one input, it has hooks of its own that a graph would skip, or it uses a quantized
    layer's weight outside that layer's call. It is then measured one configuration at a time."""


def _mutates_first_input(node: fx.Node, module: nn.Module | None) -> bool:
    if "out" in node.kwargs:
        return True
    if node.op == "call_module":
        return bool(getattr(module, "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (
            node.target in _INPLACE_OPERATORS
            or node.kwargs.get("inplace") is True
            or (name.endswith("_") and not name.endswith("__"))
        )
    return False


def trace(model: nn.Module) -> fx.GraphModule:
    """A copy of `model` in eval mode traced by torch.fx, whose nodes can be computed once and reused
    (its output selector aside: apply `selected`), or Untraceable: fx cannot trace it, it has hooks
    of its own, it changes a tensor in place (a later reader would hide what it depends on), or
    its forward takes more than the images."""
    if model._forward_pre_hooks or any(not isinstance(h, OutputSelector) for h in model._forward_hooks.values()):
        raise Untraceable("the model has hooks of its own, which a traced graph does not run")
    try:
        graph = fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as exc:  # fx raises many types for untraceable Python control flow
        raise Untraceable(str(exc)) from None
    modules = dict(graph.named_modules())
    for node in graph.graph.nodes:
        if _mutates_first_input(node, modules[node.target] if node.op == "call_module" else None):
            raise Untraceable(f"{node.name} changes a tensor in place")
    if sum(node.op == "placeholder" for node in graph.graph.nodes) != 1:
        raise Untraceable("the model's forward takes more than the images")
    return graph


class Sweep:
    """The traced `model` with its layer registry `layers`; quantized weights come from `cache`, in its
    format. With `bn_recalibration` every BatchNorm that tracks running statistics is re-estimated per
    configuration, as `quantize_model` does."""

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], cache: WeightCache, bn_recalibration: bool):
        self.model, self.cache = model, cache
        self.graph = trace(model)
        index = {l.name: l.index for l in layers}
        modules = dict(self.graph.named_modules())
        self.nodes = list(self.graph.graph.nodes)
        deps: dict[fx.Node, frozenset[int]] = {}
        self.role: dict[fx.Node, object] = {}  # a layer's index, "bn", or the module / attribute to use
        for node in self.nodes:
            found = frozenset().union(*(deps[a] for a in node.all_input_nodes))
            module = modules[node.target] if node.op == "call_module" else None
            if node.target in index and node.op == "call_module":
                found |= {index[node.target]}
                self.role[node] = index[node.target]
            elif (
                bn_recalibration and isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
            ):
                self.role[node] = "bn"
            elif node.op == "get_attr":
                if any(node.target.startswith(name + ".") for name in index):
                    raise Untraceable(f"{node.target} is used outside its layer")
                self.role[node] = reduce(getattr, node.target.split("."), self.graph)
            else:
                self.role[node] = module
            deps[node] = found
        missing = set(index.values()) - {r for r in self.role.values() if isinstance(r, int)}
        if missing:
            raise Untraceable(f"layers {sorted(missing)} are not called as modules")
        self.deps = [tuple(sorted(deps[n])) for n in self.nodes]
        self.position = {n: t for t, n in enumerate(self.nodes)}
        self.inputs = [[self.position[a] for a in n.all_input_nodes] for n in self.nodes]
        self.last_use = [max((self.position[u] for u in n.users), default=-1) for n in self.nodes]
        self.own = {n: self.deps[i].index(r) for i, n in enumerate(self.nodes) if isinstance(r := self.role[n], int)}
        self._layers: dict[tuple[int, int], nn.Module] = {}
        self.layer_inputs = [0] * len(layers)  # samples each layer has computed, for counting the work

    def _layer(self, index: int, bits: int, node: fx.Node) -> nn.Module:
        """The layer's module with its weight quantized to `bits`."""
        if (index, bits) not in self._layers:
            module = copy.deepcopy(self.graph.get_submodule(node.target))
            with torch.no_grad():
                module.weight.copy_(self.cache.get(index, bits))
            self._layers[index, bits] = module
        return self._layers[index, bits]

    @torch.no_grad()
    def measure(
        self,
        configs: Sequence[Config],
        calib_images: torch.Tensor,
        images: torch.Tensor,
        labels: torch.Tensor,
        log: Callable[[str], None] | None = None,
    ) -> list[float]:
        """The metric (top-1 %, or perplexity for next-token labels) of each configuration, as
        `metric.measure(quantize_model(...))` gives it; `log` gets their passes' progress lines."""
        order = sorted(range(len(configs)), key=lambda i: configs[i])
        keys = [[tuple(configs[i][j] for j in d) for d in self.deps] for i in order]
        states: dict[tuple[fx.Node, tuple], nn.Module] = {}  # re-estimated BatchNorms, input-quantized layers
        if any(r == "bn" for r in self.role.values()):
            for batch in paced_batches(calib_images, BN_BATCH, "BatchNorm re-estimation", log):
                self._run(batch, keys, "bn", states)
            for state in states.values():
                state.eval()
        ranged = [k for k, i in zip(keys, order) if any(a < 32 for _, a in configs[i])]
        if ranged:  # min/max ranges do not depend on the batches (BatchNorm's variance above does)
            for batch in paced_batches(calib_images, EVAL_BATCH, "activation ranges", log):
                self._run(batch, ranged, "range", states)
            for state in states.values():
                for quantizer in state._forward_pre_hooks.values():  # the layers' (BatchNorm copies have none)
                    quantizer.calibrating = False
        metric, totals, top = metric_of(labels), [0] * len(configs), int(labels.max())
        for batch, truth in zip(paced_batches(images, EVAL_BATCH, "evaluation", log), labels.split(EVAL_BATCH)):
            for i, logits in zip(order, self._run(batch, keys, "eval", states)):
                totals[i] += metric.batch_sum(logits, truth, top)
        return [metric.finish(t, labels.numel()) for t in totals]

    def _run(self, batch: torch.Tensor, keys: list[list[tuple]], mode: str, states: dict) -> list:
        """The graph's output on `batch` for each configuration's node keys, in order. A node keeps
        its output from the configuration before when its key is the same; an output that the next
        configuration will not keep is let go after its last use, as eager execution does, so that
        memory is reused while it is still in the caches."""
        memo: dict[int, tuple[tuple, object]] = {}
        estimated: set[tuple[fx.Node, tuple]] = set()  # BatchNorm estimates that have counted this batch
        outputs = []
        for p, config_keys in enumerate(keys):
            after = keys[p + 1] if p + 1 < len(keys) else None
            for t, key in enumerate(config_keys):
                kept = memo.get(t)
                if kept is not None and kept[0] == key:
                    continue
                memo[t] = (key, self._compute(self.nodes[t], key, batch, memo, mode, states, estimated))
                for m in self.inputs[t]:
                    if self.last_use[m] == t and (after is None or after[m] != config_keys[m]):
                        del memo[m]
            outputs.append(selected(self.model, memo[len(self.nodes) - 1][1]))
        return outputs

    def _compute(
        self, node: fx.Node, key: tuple, batch: torch.Tensor, memo: dict, mode: str, states: dict, estimated: set
    ):
        if node.op == "placeholder":
            return batch
        args = fx.node.map_arg(node.args, lambda n: memo[self.position[n]][1])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: memo[self.position[n]][1])
        if node.op == "output":
            return args[0]
        if node.op == "get_attr":
            return self.role[node]
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        role = self.role[node]
        if isinstance(role, int):
            w_bits, a_bits = key[self.own[node]]
            module = self._layer(role, w_bits, node)
            self.layer_inputs[role] += len(args[0])
            if a_bits < 32 and mode != "bn":  # with an input quantizer, as quantize_model gives it
                if (node, key) not in states:  # only in the range pass
                    states[node, key] = copy.deepcopy(module)
                    quantize_input(states[node, key], w_bits, a_bits, self.cache.fmt)
                module = states[node, key]
            return module(*args, **kwargs)
        if role == "bn":
            bn = states.get((node, key))
            if bn is None:  # only in the BatchNorm pass: a fresh cumulative estimate
                states[node, key] = bn = start_reestimation(copy.deepcopy(self.graph.get_submodule(node.target)))
            if mode == "bn":
                # A key can come back after another one (a shortcut's layers are not a prefix of the sorted
                # order): its output is computed again, on a copy, so that the batch counts once.
                if (node, key) in estimated:
                    bn = copy.deepcopy(bn)
                estimated.add((node, key))
            return bn(*args, **kwargs)
        return role(*args, **kwargs)
