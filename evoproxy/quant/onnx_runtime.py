"""An exported ONNX file run in onnxruntime: its session, its accuracy, and the check that it computes
what the PyTorch model computes.

The check compares the outputs on a set of images. Two levels of the coarsest activation
quantizer are allowed, but a deep network goes beyond that without any fault in the graph. The two
runtimes sum in other orders, so the odd value lies within float rounding of a level boundary and
lands on the other level (a rounding flip). Every later quantizer turns the difference this makes
into whole levels, more of them layer after layer: in torchvision's EfficientNet-B0 (random
weights; 4-bit weights, 8-bit inputs), 6 flipped values of 4.5 million move the logits by 1.5 of
13, and PyTorch's own fake_quantize against the LSQ quantizer's division (3 flips) as much.
So beyond the tolerance, the file is checked layer by layer on a few images: PyTorch is fed
onnxruntime's quantized activations, and at every quantizer, onnxruntime's input must equal
PyTorch's within float rounding and its levels must be PyTorch's levels of that input, except on a
rounding boundary; the outputs must then agree within float rounding too. A file that passes
computes what the PyTorch model computes, and is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import EvoproxyError, exception_line
from ..model import EVAL_BATCH, count_correct, evaluating, paced_batches, quantizable_modules

FLOAT_RTOL = 1e-3  # float32 sums reassociated: 2^-23 per term over up to ~10^4 terms
INPUT_RTOL = 1e-4  # of a quantizer's range: float rounding of the sums before it, far below a level
TIE = 1e-3  # how near a level boundary (in levels) a value may be when the runtimes round it apart
LAYERWISE_IMAGES = 8  # enough to exercise every node; every activation of the graph is kept for them
TRACED_BATCH = (
    "torch.onnx traces a batch of one image, so a batch size that the model's forward reads as a number "
    "(len(x), int(x.shape[0])) stays 1 in the file; read it as x.shape[0], which the file keeps as the batch's size"
)


@dataclass(frozen=True)
class OnnxCheck:
    """What the check of an ONNX file found on its images: the outputs of onnxruntime and of the
    PyTorch model (kept, so that nothing runs twice), which differ by up to `diff`, against
    `tolerance`. Beyond it, `flips` of the `values` activation values of the layer-by-layer check (on
    its first LAYERWISE_IMAGES images) were rounded to the neighbouring level (None: not needed)."""

    onnx_outputs: torch.Tensor
    torch_outputs: torch.Tensor
    diff: float
    tolerance: float
    flips: int | None = None
    values: int = 0

    def accuracies(self, labels: torch.Tensor) -> tuple[float, float]:
        """Top-1 accuracy (%) of onnxruntime and of PyTorch, the check images' labels `labels`."""
        labels = labels.cpu()
        correct = [count_correct(out, labels, int(labels.max())) for out in (self.onnx_outputs, self.torch_outputs)]
        return 100.0 * correct[0] / len(labels), 100.0 * correct[1] / len(labels)


def ort_session(path: str | Path | bytes, threads: int | None = None, optimized: Path | None = None):
    """An onnxruntime CPU session on the ONNX file `path` (or a serialized model), with onnxruntime's
    default options, or for timing: `threads` intra-op threads, one inter-op thread, sequential
    execution; with `optimized`, the optimized graph is written there."""
    try:
        import onnxruntime
    except ImportError:
        raise EvoproxyError("onnxruntime is not installed: pip install 'evoproxy[onnx]'") from None
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # writing an NCHWc-optimized graph warns that it fits this machine only
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    model = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def output_tolerance(qmodel: nn.Module, outputs: torch.Tensor) -> float:
    """How far an ONNX run of `qmodel` may stray from `outputs` (its PyTorch outputs on a batch)
    before the layer-by-layer check: two levels of its coarsest activation quantizer,
    2·max|outputs| / (2^b − 1) for b bits, what a rounding flip does in a shallow network (on the
    shipped ResNet, hundreds per image at 8 bits). Without quantized inputs: FLOAT_RTOL·max|outputs|."""
    levels = [m.act_quantizer.qn + m.act_quantizer.qp for m in qmodel.modules() if hasattr(m, "act_quantizer")]
    return outputs.abs().max().item() * (2 / min(levels) if levels else FLOAT_RTOL)


def run_session(session, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every output of the onnxruntime `session` on `images` (its input "input"), by name; an
    EvoproxyError if onnxruntime cannot run them."""
    try:
        outputs = session.run(None, {"input": images.cpu().float().numpy()})
    except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidArgument, RuntimeException)
        refused = f"onnxruntime cannot run the exported model on {len(images)} images ({exception_line(exc)})"
        try:
            if len(images) > 1 and run_session(session, images[:1]):
                refused += f", only on one: {TRACED_BATCH}"
        except EvoproxyError:
            pass
        raise EvoproxyError(refused) from None
    return {o.name: torch.from_numpy(v) for o, v in zip(session.get_outputs(), outputs)}


def run_both(
    qmodel: nn.Module, path: Path, images: torch.Tensor, target: Path, log: Callable[[str], None] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs of the ONNX file `path` in onnxruntime and of `qmodel` in PyTorch on `images`, in
    batches of EVAL_BATCH (`log` gets a line now and then on each runtime's pass, pace.paced); an
    EvoproxyError (naming `target`, not written) where the file cannot run them or gives another shape."""
    device = next(qmodel.parameters()).device
    with evaluating(qmodel), torch.no_grad():
        want = [qmodel(x.to(device)).float().cpu() for x in paced_batches(images, EVAL_BATCH, "PyTorch check", log)]
    session, got = ort_session(path), []
    for x, ours in zip(paced_batches(images, EVAL_BATCH, "onnxruntime check", log), want):
        got.append(run_session(session, x)["logits"])
        if got[-1].shape != ours.shape:
            raise EvoproxyError(
                f"the ONNX model's outputs on {len(x)} images have the shape {tuple(got[-1].shape)}, the PyTorch "
                f"model's {tuple(ours.shape)}"
                + (f"; {TRACED_BATCH}" if got[-1].shape[:1] != ours.shape[:1] else "")
                + f": {target} not written"
            )
    return torch.cat(got), torch.cat(want)


def check_outputs(
    qmodel: nn.Module, path: Path, images: torch.Tensor, target: Path, log: Callable[[str], None] | None = None
) -> OnnxCheck:
    """Compare the ONNX file `path` in onnxruntime with `qmodel` in PyTorch on `images` (`run_both`,
    `log` its progress lines): within `output_tolerance`, or else layer by layer (see the module's
    docstring). An EvoproxyError naming `target` if they differ."""
    got, want = run_both(qmodel, path, images, target, log)
    diff, tol = (got - want).abs().max().item(), output_tolerance(qmodel, want)
    if diff <= tol:
        return OnnxCheck(got, want, diff, tol)
    refused = (
        f"the ONNX model's outputs differ from the PyTorch model's by up to {diff:.3g} on {len(images)} images, "
        f"beyond the tolerance {tol:.3g} (2·max|output| / (2^b − 1), b the fewest activation bits)"
    )
    if diff != diff:  # NaN
        raise EvoproxyError(f"{refused}: {target} not written")
    with evaluating(qmodel), torch.no_grad():
        flips, values = _layer_by_layer(qmodel, path, images[:LAYERWISE_IMAGES], f"{refused}, and ", target)
    return OnnxCheck(got, want, diff, tol, flips, values)


def _activation_pairs(graph) -> list[tuple[str, str]]:
    """(QuantizeLinear input, DequantizeLinear output) of every QDQ pair on a computed
    tensor (an activation, not a weight), in graph order: the order in which the traced model ran them."""
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    dequantize = {n.input[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    return [
        (n.input[0], dequantize[n.output[0]].output[0])
        for n in graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] not in constants and n.output[0] in dequantize
    ]


def _levels(x: torch.Tensor, lsq: nn.Module) -> torch.Tensor:
    """`x` in levels of the LSQ quantizer `lsq`, clamped to its range, unrounded (CPU, float)."""
    return torch.clamp(x.float().cpu() / lsq.step.item(), -lsq.qn, lsq.qp)


def _layer_by_layer(qmodel: nn.Module, path: Path, images: torch.Tensor, refused: str, target: Path) -> tuple[int, int]:
    """Run `qmodel` on `images` with onnxruntime's quantized activations in place of its own and
    compare every quantizer's input and levels, and the outputs (module docstring). Returns the
    rounding flips and the activation values compared; raises EvoproxyError, its message starting
    with `refused`, at the first difference."""
    import onnx

    model = onnx.load(str(path))
    pairs = _activation_pairs(model.graph)
    for name in {t for pair in pairs for t in pair} - {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    ort = run_session(ort_session(model.SerializeToString()), images)
    names = {id(m.act_quantizer): name for name, m in quantizable_modules(qmodel) if hasattr(m, "act_quantizer")}
    calls: list[tuple[str, nn.Module, torch.Tensor, int]] = []  # layer, quantizer, its input, its pair

    def fed(lsq: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook: onnxruntime's quantized activation in place of the quantizer's output. Its pair
        is the graph's next one, or an earlier one for a layer that quantizes the same tensor as
        another, in the same way (torch.onnx writes such pairs once)."""
        new = max((c[3] for c in calls), default=-1) + 1
        mine, gap = _levels(inputs[0], lsq), INPUT_RTOL * (lsq.qn + lsq.qp)
        for j in [new, *range(new - 1, -1, -1)] if new < len(pairs) else range(new - 1, -1, -1):
            theirs = ort[pairs[j][0]]
            if theirs.shape == mine.shape and (_levels(theirs, lsq) - mine).abs().max() <= gap:
                calls.append((names[id(lsq)], lsq, mine, j))
                return ort[pairs[j][1]].to(output)
        raise EvoproxyError(
            f"{refused}layer {names[id(lsq)]!r}'s input differs beyond float rounding: {target} not written"
        )

    hooks = [m.act_quantizer.register_forward_hook(fed) for m in qmodel.modules() if hasattr(m, "act_quantizer")]
    try:
        out = qmodel(images.to(next(qmodel.parameters()).device)).float().cpu()
    finally:
        for hook in hooks:
            hook.remove()
    if {c[3] for c in calls} != set(range(len(pairs))):
        raise EvoproxyError(f"{refused}it quantizes tensors that the PyTorch model does not: {target} not written")
    flips = values = 0
    for name, lsq, mine, j in calls:
        theirs, their_levels = _levels(ort[pairs[j][0]], lsq), torch.round(ort[pairs[j][1]] / lsq.step.item())
        apart = torch.round(theirs) != their_levels
        on_boundary = ((theirs - theirs.floor() - 0.5).abs() <= TIE) & ((theirs - their_levels).abs() <= 0.5 + TIE)
        if (apart & ~on_boundary).any():
            raise EvoproxyError(f"{refused}layer {name!r}'s input is quantized to other levels: {target} not written")
        flips, values = flips + int((torch.round(mine) != their_levels).sum()), values + mine.numel()
    if (ort["logits"] - out).abs().max().item() > FLOAT_RTOL * out.abs().max().item():
        raise EvoproxyError(f"{refused}its outputs differ given the same quantized activations: {target} not written")
    return flips, values


def onnxruntime_accuracy(path: str | Path, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy (%) of the ONNX file `path` run by onnxruntime (CPU) on `images` (N, ...)
    with `labels` (N,)."""
    session = ort_session(path)
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = session.run(None, {"input": images[i : i + batch_size].cpu().float().numpy()})[0]
        correct += count_correct(torch.from_numpy(logits), labels[i : i + batch_size].cpu(), int(labels.max()))
    return 100.0 * correct / len(images)
