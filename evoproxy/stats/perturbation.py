"""Measured output perturbations: what quantizing one layer's weights to b bits (every other layer
left in float) does to the network on the calibration batch. They are the layer scores that
quantization tools measure, per layer, bit-width b of QBITS and calibration sample (a language
model's token window):

- MSE     mean squared difference of the model's outputs (logits), quantized against float, over
          the mean square of the float outputs on the batch: Sony MCT's normalised output distance,
          taken at the output only (MCT also averages over interior "interest points"). AIMET's
          SQNR in dB is −10·log10 of its batch mean.
- KL      KL(p ‖ p_q) of the float and quantized softmax outputs: ZeroQ's sensitivity (here on the
          calibration batch; a language model's averaged over the window's tokens).
- TAYLOR  Σ (∂L/∂Y · (Y_q − Y))² over the elements of the layer's own output Y, Y_q its output with
          quantized weights on the same input, ∂L/∂Y of the sample's own loss: NVIDIA ModelOpt
          auto_quantize's default score.

Where they differ from the tools: weights only, in the statistics' weight format (activations
stay float), and BatchNorm is not re-estimated after quantizing (the benches may re-estimate it).
The other layers stay float too, unless `around` names a bit-width for them: MSE and KL are then
those of the whole model with every layer at `around` bits but this one at b (still against the
float outputs), measured at the operating point of a budget near `around` bits a weight, where
errors add to one another's; TAYLOR stays the layer's own.

Cost: one forward pass of the batch per layer and bit-width, plus one backward; where torch.fx can
trace the model as the bench sweep does, each pass computes only what the layer's output feeds, and
takes every other value from one pass of the model as the other layers are (the same values, to the bit).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import fx, nn
from torch.func import functional_call

from ..model import next_token_loss, selected
from ..pace import paced
from ..quant import WeightFormat, quantize_weight
from ..quant.sweep import Untraceable, trace

PERTURBATIONS = ("MSE", "KL", "TAYLOR")  # the LayerStats fields that hold them
SQNR_FLOOR = 1e-12  # noise power relative to the signal: a perturbation below it counts as 120 dB


def sqnr_db(mse: torch.Tensor) -> torch.Tensor:
    """AIMET's signal-to-quantization-noise ratio in dB from a batch mean of MSE (noise over signal power)."""
    return -10 * torch.log10(torch.as_tensor(mse, dtype=torch.float64).clamp_min(SQNR_FLOOR))


def _per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's loss (a token window's mean next-token loss), shape (batch,)."""
    return next_token_loss(logits, labels, reduction="none").reshape(len(labels), -1).mean(1)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(len(values), -1).double()


class _Reusing(fx.Interpreter):
    """Runs a traced graph, computing only the nodes in `affected` and taking the others' `values`."""

    def __init__(self, graph: fx.GraphModule, values: dict, affected: frozenset):
        super().__init__(graph)
        self.values, self.affected = values, affected

    def run_node(self, node: fx.Node):
        return super().run_node(node) if node in self.affected else self.values[node]


def _with_layer(work: nn.Module, images: torch.Tensor) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """A function (layer name, weight) → the outputs of `work` on `images` with that layer's weight
    replaced (and restored after). From a traced copy where it can be traced: one float pass keeps
    every node's value, and each call computes only the nodes downstream of the layer's calls and
    of any other read of its parameters; else a forward pass of `work` itself."""
    try:
        graph = trace(work)
    except Untraceable:
        graph = None
    values: dict[fx.Node, object] = {}
    if graph is not None:
        recorder = fx.Interpreter(graph, garbage_collect_values=False)
        recorder.run(images)
        values = recorder.env
    nodes = list(graph.graph.nodes) if graph is not None else []

    @functools.cache  # one set per layer, whichever bit-width its weight is quantized to
    def downstream(name: str) -> frozenset[fx.Node]:
        affected = {
            n
            for n in nodes
            if (n.op == "call_module" and n.target == name) or (n.op == "get_attr" and n.target.startswith(name + "."))
        }
        for n in nodes:  # in graph order: a node's inputs come before it
            if n not in affected and any(a in affected for a in n.all_input_nodes):
                affected.add(n)
        return frozenset(affected)

    def run(name: str, weight: torch.Tensor) -> torch.Tensor:
        module = (work if graph is None else graph).get_submodule(name)
        saved = module.weight.detach().clone()
        module.weight.copy_(weight)
        try:
            if graph is None:
                return work(images)
            return selected(work, _Reusing(graph, values, downstream(name)).run(images))
        finally:
            module.weight.copy_(saved)

    return run


@contextmanager
def _all_at(modules: dict[str, nn.Module], names: list[str], bits: int | None, fmt) -> Iterator[dict]:
    """Within it, the weights of the layers `names` are quantized to `bits` (None: left as they are);
    yields their float weights so changed, restored on leaving."""
    saved = {n: modules[n].weight.detach().clone() for n in names} if bits is not None else {}
    for name, weight in saved.items():
        modules[name].weight.copy_(quantize_weight(weight, bits, fmt))
    try:
        yield saved
    finally:
        for name, weight in saved.items():
            modules[name].weight.copy_(weight)


def output_perturbations(
    work: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    modules: dict[str, nn.Module],
    names: list[str],
    bits: tuple[int, ...],
    fmt: WeightFormat,
    log=None,
    around: int | None = None,
) -> list[dict[str, dict[int, torch.Tensor]]]:
    """Per layer of `names` (modules of `work`, an eval-mode model whose weights require grad), a
    dict perturbation name → bit-width → float64 tensor (batch,); with the other layers at `around`
    bits (None: float) for MSE and KL. `work` is left as it was. `log` gets a line of progress now
    and then (pace.paced)."""
    inputs, outputs = {}, {}

    def keep(module, args, out, name):
        inputs[name], outputs[name] = args[0].detach(), out

    hooks = [modules[n].register_forward_hook(lambda m, a, o, n=n: keep(m, a, o, n)) for n in names]
    try:
        reference = work(images)
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(_per_sample_loss(reference, labels).sum(), [outputs[n] for n in names])
    reference = reference.detach()
    power = reference.pow(2).mean().clamp_min(torch.finfo(reference.dtype).tiny)
    log_p = torch.log_softmax(reference, -1)

    result = []
    with torch.no_grad(), _all_at(modules, names, around, fmt) as float_weights:
        forward = _with_layer(work, images)  # its reused values those of the model at `around` bits
        for name, grad in paced(zip(names, grads), len(names), "output perturbations: layer", log):
            module = modules[name]
            weight = float_weights[name] if float_weights else module.weight.detach().clone()
            float_out = outputs[name].detach()
            measured = {p: {} for p in PERTURBATIONS}
            for b in bits:
                quantized = quantize_weight(weight, b, fmt)
                delta = functional_call(module, {"weight": quantized}, (inputs[name],)) - float_out
                measured["TAYLOR"][b] = _per_sample(grad * delta).pow(2).sum(1)
                logits = forward(name, quantized)
                measured["MSE"][b] = _per_sample((logits - reference).pow(2)).mean(1) / float(power)
                kl = (log_p.exp() * (log_p - torch.log_softmax(logits, -1))).sum(-1)
                measured["KL"][b] = _per_sample(kl).mean(1)
            result.append(measured)
    return result
