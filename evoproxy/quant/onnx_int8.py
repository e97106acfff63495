"""ONNX export that onnxruntime runs as integer kernels (`evoproxy export --kernels int8`).

`export_onnx` writes the LSQ model's own graph: QDQ pairs on weights and inputs, BatchNorm and the
bias after each layer. onnxruntime cannot fuse that into an int8 kernel, which needs the layer's
input, weights and output through QDQ pairs with nothing between the layer and its output pair; so
it runs float kernels on dequantized weights. Here every layer whose weights and input both have
2 to 8 bits (an "int8 layer") is rewritten, on the model's torch.fx graph, into that form:

- the BatchNorm right after it is folded in: weights times γ/σ per output channel, which keeps
  their levels (the per-channel step is multiplied by |γ/σ| too, so no weight is requantized), and
  the bias (b − μ)·γ/σ + β, which onnxruntime quantizes to int32 at input step × weight step;
- a uint8 QDQ pair on its output, after a ReLU that follows (onnxruntime then drops the ReLU, which
  the zero point 0 of a non-negative range does). Where that output is the input of a layer with
  an 8-bit input quantizer, the pair is that quantizer's, so it changes nothing there (onnxruntime
  merges the two identical pairs). Elsewhere (before a residual addition, pooling, the logits) it is
  a new 8-bit range, min/max on the calibration images, which rounds a tensor that the
  fake-quantized model keeps in float (onnxruntime 1.32 fuses a Gemm without it into no QGemm);
- a tensor that feeds such a layer and other operators too (a residual block's output, which
  feeds the next block's first convolution and its addition) passes through that layer's pair
  for all of them, so that an addition of two quantized tensors becomes QLinearAdd: the addition
  then takes the rounded tensor where the fake-quantized model takes the float one.

Layers at 32 bits, and layers with float weights or a float input, are written as `export_onnx`
writes them. Folding and the int32 bias change the arithmetic only by float rounding; the new
output ranges and the rounded residual inputs change values by up to half a step each. So the
check (`check_int8`) compares the file with the fake-quantized PyTorch model by its predictions,
not its levels: on the check images the two may disagree on the top-1 class of at most
DISAGREE_TOL of them (the default ResNet-20 at W8A8: 1 image of 500).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from ..errors import EvoproxyError, exception_line
from ..model import EVAL_BATCH, LayerInfo, evaluating, paced_batches, quantizable_modules
from .fakequant import ActQuant
from .onnx_export import INT8_MAX, UINT8_MAX, qdq_model, write_onnx
from .onnx_runtime import OnnxCheck, ort_session, run_both

INT8_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat"})
DISAGREE_TOL = 0.02  # of the check images: output ranges round what the fake-quantized model keeps float
_RELU = (torch.relu, nn.functional.relu)
_BN = nn.modules.batchnorm._BatchNorm


class OutputQdq(nn.Module):
    """A per-tensor uint8 QDQ pair on a layer's output with the step and zero point of `quantizer`
    (an ActQuant at 8 bits): while it calibrates, the pair passes its input through and records
    its range."""

    def __init__(self, quantizer: ActQuant):
        super().__init__()
        self.quantizer = quantizer

    @classmethod
    def over(cls, x: torch.Tensor) -> OutputQdq:
        """The pair over the range of `x` (0 included)."""
        quantizer = ActQuant(8)
        quantizer(None, (x,))
        quantizer.calibrating = False
        return cls(quantizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantizer.calibrating:
            self.quantizer(None, (x,))
            return x
        scale, zero = self.quantizer.scale_and_zero()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, UINT8_MAX)


def _fixed(step: float, zero: int) -> ActQuant:
    """An 8-bit ActQuant with the given step and zero point."""
    quantizer = ActQuant(8)
    quantizer.lo, quantizer.hi, quantizer.calibrating = -zero * step, (UINT8_MAX - zero) * step, False
    return quantizer


def _is_relu(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_function":
        return node.target in _RELU
    if node.op == "call_method":
        return node.target == "relu"
    return node.op == "call_module" and type(modules[node.target]) is nn.ReLU


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _fold_bn(layer: nn.Module, bn: nn.Module) -> None:
    """Fold the eval-mode BatchNorm `bn` into the parametrized `layer` (see the module docstring)."""
    with torch.no_grad():
        k = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            k = k * bn.weight
        shift = (bn.bias if bn.affine else 0) - bn.running_mean * k
        weights = layer.parametrizations.weight
        lsq, shape = weights[0], (-1, *[1] * (weights.original.dim() - 1))
        weights.original.copy_(lsq(weights.original) * k.reshape(shape))
        lsq.step.copy_((lsq.step * k.abs().reshape(lsq.step.shape)).clamp_min(torch.finfo(k.dtype).tiny))
        bias = shift if layer.bias is None else shift + layer.bias * k
    layer.bias = nn.Parameter(bias.detach().clone())


def int8_layer_names(qmodel: nn.Module, layers: Sequence[LayerInfo]) -> list[str]:
    """The layers of `layers` whose weights and input both have 2 to 8 bits in the LSQ model."""
    modules = dict(quantizable_modules(qmodel))
    return [
        l.name
        for l in layers
        if parametrize.is_parametrized(modules[l.name], "weight")
        and modules[l.name].parametrizations.weight[0].qp <= INT8_MAX
        and getattr(modules[l.name], "act_quantizer", None) is not None
        and modules[l.name].act_quantizer.qn + modules[l.name].act_quantizer.qp <= UINT8_MAX
    ]


def _chain(node: fx.Node, modules: dict) -> tuple[fx.Node | None, fx.Node | None]:
    """The BatchNorm right after the layer `node` (its only user), and a ReLU right after that (or
    after the layer); None for each that is not there."""
    bn = _only_user(node)
    if bn is None or bn.op != "call_module" or not isinstance(modules[bn.target], _BN):
        bn = None
    relu = _only_user(node if bn is None else bn)
    return bn, relu if relu is not None and _is_relu(relu, modules) else None


def followers(model: nn.Module, names: Sequence[str]) -> dict[str, list[nn.Module]]:
    """Per layer of `names`, the chain that `_fold_chains` folds (`_chain`): what runs beside the
    layer in an exported file. An empty chain for each if torch.fx cannot trace the model."""
    out = {name: [] for name in names}
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # fx raises many types for Python control flow it cannot trace
        return out
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in out:
            bn, relu = _chain(node, modules)
            out[node.target] = ([] if bn is None else [modules[bn.target]]) + ([] if relu is None else [nn.ReLU()])
    return out


def _fold_chains(gm: fx.GraphModule, modules: dict, int8: set[str]) -> set[fx.Node]:
    """Fold the BatchNorm right after each of the `int8` layers of `gm` into it; the nodes that end
    each layer's chain (`_chain`): the layer, or a ReLU right after it (or after its BatchNorm)."""
    ends = set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in int8:
            continue
        bn, relu = _chain(node, modules)
        if bn is not None:
            _fold_bn(modules[node.target], modules[bn.target])
            bn.replace_all_uses_with(node)
            gm.graph.erase_node(bn)
        ends.add(relu or node)
    return ends


def _input_pair(node: fx.Node, modules: dict) -> ActQuant | None:
    """The 8-bit input quantizer of the first layer that `node` feeds, as an ActQuant; None if none."""
    for user in node.users:
        lsq = getattr(modules[user.target], "act_quantizer", None) if user.op == "call_module" else None
        if lsq is not None and lsq.qn + lsq.qp == UINT8_MAX:
            return _fixed(lsq.step.item(), lsq.qn)
    return None


def int8_model(
    qmodel: nn.Module,
    layers: Sequence[LayerInfo],
    calib_images: torch.Tensor,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """A copy of the LSQ model `qmodel` (eval mode) as a torch.fx GraphModule with its int8 layers
    rewritten (module docstring), output ranges calibrated on `calib_images` (`log` gets that
    pass's progress lines, pace.paced), then written as
    `qdq_model` writes it (int8 layers' biases kept inside). EvoproxyError if torch.fx cannot trace it."""
    model = copy.deepcopy(qmodel).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for Python control flow it cannot trace
        raise EvoproxyError(
            f"--kernels int8 rewrites the model's torch.fx graph, which torch.fx cannot trace ({exception_line(exc)}): "
            "export without --kernels int8"
        ) from None
    for hook in model._forward_hooks.values():  # symbolic_trace records forward() alone
        gm.register_forward_hook(hook)
    modules = dict(gm.named_modules())
    int8 = set(int8_layer_names(gm, layers))
    ends = _fold_chains(gm, modules, int8)
    for node in list(gm.graph.nodes):
        quantizer = _input_pair(node, modules)
        if node in ends:
            quantizer = quantizer or ActQuant(8)
        elif quantizer is None or len(node.users) < 2:
            continue
        name = f"{node.name}_output_qdq"
        gm.add_submodule(name, OutputQdq(quantizer))
        with gm.graph.inserting_after(node):
            pair = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(pair, delete_user_cb=lambda user: user is not pair)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    with evaluating(gm), torch.no_grad():
        for batch in paced_batches(calib_images, EVAL_BATCH, "output ranges", log):
            gm(batch.to(next(gm.parameters()).device))
    for module in gm.modules():
        if isinstance(module, OutputQdq):
            module.quantizer.calibrating = False
    return qdq_model(gm, layers, fused=int8)


def optimized_ops(path: Path) -> list[str]:
    """The operators of the graph that onnxruntime optimizes `path` into, in order."""
    import onnx

    optimized = path.with_name(path.name + ".optimized")
    try:
        ort_session(path, threads=1, optimized=optimized)
        return [node.op_type for node in onnx.load(str(optimized)).graph.node]
    finally:
        optimized.unlink(missing_ok=True)


def check_int8(
    qmodel: nn.Module, path: Path, images: torch.Tensor, target: Path, log: Callable[[str], None] | None = None
) -> OnnxCheck:
    """Compare the int8-kernel file `path` in onnxruntime with the fake-quantized `qmodel` on
    `images` by their top-1 classes (`run_both`, `log` its progress lines): EvoproxyError naming
    `target` if more than DISAGREE_TOL of them differ. The check's `tolerance` is that fraction,
    `diff` the fraction found."""
    got, want = run_both(qmodel, path, images, target, log)
    disagree = (got.argmax(1) != want.argmax(1)).float().mean().item()
    if not disagree <= DISAGREE_TOL or got.isnan().any():
        raise EvoproxyError(
            f"the int8-kernel ONNX model's top-1 class differs from the PyTorch model's on {100 * disagree:.1f} % "
            f"of {len(images)} images, beyond {100 * DISAGREE_TOL:g} %: {target} not written"
        )
    return OnnxCheck(got, want, disagree, DISAGREE_TOL)


def export_int8_onnx(
    qmodel: nn.Module,
    layers: Sequence[LayerInfo],
    input_shape: Sequence[int],
    path: str | Path,
    calib_images: torch.Tensor,
    check_images: torch.Tensor | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[OnnxCheck | None, list[str]]:
    """Write the LSQ model `qmodel` as `export_onnx` does, its int8 layers in the form that
    onnxruntime runs as integer kernels (module docstring), output ranges calibrated on
    `calib_images`; checked by `check_int8` on `check_images` (None: unchecked) before it is put in
    place, `log` getting the passes' progress lines. Returns the check and the operators of
    onnxruntime's optimized graph."""
    model = int8_model(qmodel, layers, calib_images, log).cpu().float()

    def check(tmp: Path) -> tuple[OnnxCheck | None, list[str]]:
        result = None if check_images is None else check_int8(qmodel, tmp, check_images, Path(path), log)
        return result, optimized_ops(tmp)

    return write_onnx(model, input_shape, path, check)
