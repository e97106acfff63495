"""ONNX export of a quantized model with QuantizeLinear/DequantizeLinear pairs (QDQ), the form in
which onnxruntime, TensorRT and OpenVINO read a quantized model.

What is exported is an LSQ model (`qat.lsq_model`): trained, the QAT model; untrained, the
round-to-nearest PTQ model that `quantize_model` gives. Its quantizers become torch's fake-quantize
ops, which torch.onnx writes as QDQ pairs, so the graph is the model's own:

- weights: per output channel (axis 0), symmetric, zero point 0, the LSQ steps as scales. ONNX has
  no integer type under 8 bits, so a b-bit weight is int8 holding levels within ±(2^(b−1) − 1);
  the float initializer holds the quantized weight, so QuantizeLinear gives exactly those levels.
- activations (every layer's input): per tensor, uint8 with the calibrated (or learned) step and
  zero point; under 8 bits a Clip before QuantizeLinear keeps them within the b-bit range.

Layers at 32 bits stay float; bits from 9 to 31 do not fit QDQ's 8-bit integers and are refused.

A layer's bias is written as an Add after it (its own bias zeroed), with a constant of the output's
rank, (1, C, 1, ...) or (1, ..., C): onnxruntime (1.20 on)
rewrites the 1-D float bias of a Conv or Gemm whose input and weight come through QDQ pairs into
int32 at scale s_x·s_w (its WeightBiasQuantization), which PyTorch's model does not do; the rounded
biases moved the logits of a 4-bit-activation MLP by 1.1 (of 15). The Add keeps them float.
onnxruntime 1.21 (not 1.20, nor 1.22 on) also rewrites the float weights of a Conv or Gemm kept at
32 bits whose input is quantized into int8 per tensor (logits moved by 0.34 of 18 on an MLP at 8-bit
activations). It takes only a layer whose input comes straight from a DequantizeLinear, so a Clip to
the quantized range, which changes no value, stands between the two.

Before the file is put in place, onnxruntime runs it on a batch of images and its outputs must match
the PyTorch model's within `output_tolerance`.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import EvoproxyError, exception_line
from ..files import replacing
from ..model import LayerInfo, count_correct, evaluating, quantizable_modules
from .qat import LsqQuantizer

OPSET = 17  # per-channel QDQ needs 13; 17 has LayerNormalization as one op
INT8_MAX, UINT8_MAX = 127, 255
FLOAT_RTOL = 1e-3  # float32 sums reassociated: 2^-23 per term over up to ~10^4 terms


class _QdqWeight(nn.Module):
    """Parametrization: an already quantized weight through a per-channel symmetric QDQ pair."""

    def __init__(self, step: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", step.detach().flatten().clone())
        self.register_buffer("zero_point", torch.zeros(len(self.scale), dtype=torch.int32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(w, self.scale, self.zero_point, 0, -INT8_MAX - 1, INT8_MAX)


class _QdqInput(nn.Module):
    """A layer's input through a per-tensor uint8 QDQ pair with an LSQ quantizer's step and zero
    point (torch exports only 8-bit ranges, so a narrower one is a Clip before it). With
    `float_weights`, a Clip to the same range after it too: see the module's note."""

    def __init__(self, lsq: LsqQuantizer, float_weights: bool):
        super().__init__()
        self.scale, self.zero_point, self.top = lsq.step.item(), lsq.qn, lsq.qn + lsq.qp
        self.float_weights = float_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = -self.zero_point * self.scale, (self.top - self.zero_point) * self.scale
        if self.top < UINT8_MAX:
            x = torch.clamp(x, low, high)
        x = torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, UINT8_MAX)
        return torch.clamp(x, low, high) if self.float_weights else x


def _add_bias(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: the layer's bias added after it, as a constant of the output's rank (a Linear's
    features last, a convolution's channels second)."""
    if isinstance(module, nn.Linear):
        return output + module.bias_after.reshape(*[1] * (output.dim() - 1), -1)
    return output + module.bias_after.reshape(1, -1, *[1] * (output.dim() - 2))


def qdq_model(qmodel: nn.Module, layers: Sequence[LayerInfo]) -> nn.Module:
    """A copy of the LSQ model `qmodel` (eval mode) whose quantizers are fake-quantize ops that
    torch.onnx exports as QDQ pairs; it computes what `qmodel` does, up to float rounding. Raises
    EvoproxyError for a layer whose weights or input have more than 8 bits and fewer than 32."""
    out = copy.deepcopy(qmodel).eval()
    modules = dict(quantizable_modules(out))
    for layer in layers:
        module = modules[layer.name]
        if parametrize.is_parametrized(module, "weight"):
            weights = module.parametrizations.weight
            lsq = weights[0]
            if lsq.qp > INT8_MAX:
                raise EvoproxyError(
                    f"layer {layer.name!r} has {(lsq.qp + 1).bit_length()}-bit weights, which do not "
                    "fit ONNX QuantizeLinear's int8: export takes 2 to 8 bits, or 32 (kept in float)"
                )
            # Swapped in place rather than removed: parametrized copies share their class, whose
            # removal would break `qmodel`.
            with torch.no_grad():
                weights.original.copy_(lsq(weights.original))
            weights[0] = _QdqWeight(lsq.step)
        if hasattr(module, "act_quantizer"):
            lsq = module.act_quantizer
            if lsq.qn + lsq.qp > UINT8_MAX:
                raise EvoproxyError(
                    f"layer {layer.name!r} has {(lsq.qn + lsq.qp).bit_length()}-bit activations, which "
                    "do not fit ONNX QuantizeLinear's uint8: export takes 1 to 8 bits, or 32 (float)"
                )
            float_weights = not parametrize.is_parametrized(module, "weight")
            module.act_quantizer = _QdqInput(lsq, float_weights)  # the LSQ model's input hook calls whatever is there
        if module.bias is not None:
            # Zeroed, not removed, so that a Linear stays a Gemm on its weight's DQ pair (without a bias,
            # torch writes a MatMul on a Transpose); onnxruntime's int32 of zero is exact.
            module.register_buffer("bias_after", module.bias.detach().clone())
            with torch.no_grad():
                module.bias.zero_()
            module.register_forward_hook(_add_bias)
    return out


def output_tolerance(qmodel: nn.Module, outputs: torch.Tensor) -> float:
    """How far an ONNX run of `qmodel` may stray from `outputs` (its PyTorch outputs on a batch):
    two levels of its coarsest activation quantizer, 2·max|outputs| / (2^b − 1) for b bits. Both
    runtimes compute in float32 but sum in other orders, so the odd value within rounding error of a
    level boundary lands on the neighbouring level (on the shipped ResNet, hundreds per image at 8
    bits), and an output moves by about that level's share of its range. Without quantized inputs:
    FLOAT_RTOL·max|outputs|."""
    levels = [m.act_quantizer.qn + m.act_quantizer.qp for m in qmodel.modules() if hasattr(m, "act_quantizer")]
    return outputs.abs().max().item() * (2 / min(levels) if levels else FLOAT_RTOL)


def ort_session(path: str | Path, threads: int | None = None, optimized: Path | None = None):
    """An onnxruntime CPU session on the ONNX file `path`, with onnxruntime's default options, or
    for timing: `threads` intra-op threads, one inter-op thread, sequential execution; with
    `optimized`, the optimized graph is written there."""
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
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class OutputCheck:
    """What the check of an exported file found on its images: the outputs of onnxruntime and of
    the PyTorch model, and their largest difference (kept, so that nothing runs twice)."""

    onnx_outputs: torch.Tensor
    torch_outputs: torch.Tensor
    diff: float

    def accuracies(self, labels: torch.Tensor) -> tuple[float, float]:
        """Top-1 accuracy (%) of onnxruntime and of PyTorch, the check images' labels `labels`."""
        labels = labels.cpu()
        correct = [count_correct(out, labels, int(labels.max())) for out in (self.onnx_outputs, self.torch_outputs)]
        return 100.0 * correct[0] / len(labels), 100.0 * correct[1] / len(labels)


def _check_outputs(qmodel: nn.Module, path: Path, images: torch.Tensor, target: Path) -> OutputCheck:
    """The outputs of the ONNX file `path` in onnxruntime and of `qmodel` in PyTorch on `images`; an
    EvoproxyError naming `target` where they differ beyond `output_tolerance`."""
    device = next(qmodel.parameters()).device
    with evaluating(qmodel), torch.no_grad():
        want = qmodel(images.to(device)).float().cpu()
    got = torch.from_numpy(ort_session(path).run(None, {"input": images.cpu().float().numpy()})[0])
    diff, tol = (got - want).abs().max().item(), output_tolerance(qmodel, want)
    if not diff <= tol:  # NaN included
        raise EvoproxyError(
            f"the ONNX model's outputs differ from the PyTorch model's by up to {diff:.3g} on {len(images)} images, "
            f"beyond the tolerance {tol:.3g} (2·max|output| / (2^b − 1), b the fewest activation bits): "
            f"{target} not written"
        )
    return OutputCheck(got, want, diff)


def export_onnx(
    qmodel: nn.Module,
    layers: Sequence[LayerInfo],
    input_shape: Sequence[int],
    path: str | Path,
    check_images: torch.Tensor | None = None,
) -> OutputCheck | None:
    """Write the LSQ model `qmodel` (from `lsq_model`, trained or not) to the ONNX file `path`
    with QDQ pairs on the quantized weights and inputs of `layers`; its input "input" is
    (batch, *input_shape) float32, its output "logits" (batch, classes), the batch of any size.
    With `check_images` (N, *input_shape), the file is first run in onnxruntime on them and put in
    place only if its outputs match `qmodel`'s within `output_tolerance` (else EvoproxyError, and
    `path` is left as it was); returns what the check found (None unchecked)."""
    model = qdq_model(qmodel, layers).cpu().float()
    example = torch.zeros(1, *input_shape)
    with replacing(Path(path)) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated, but torch's new one needs onnxscript, which is
            # not a dependency, and it writes fake quantization as the same QDQ pairs.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                )
            except Exception as exc:  # the exporter raises many types for an op it cannot write
                raise EvoproxyError(f"torch.onnx could not export the model ({exception_line(exc)})") from None
        return None if check_images is None else _check_outputs(qmodel, tmp, check_images, Path(path))


def onnxruntime_accuracy(path: str | Path, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy (%) of the ONNX file `path` run by onnxruntime (CPU) on `images` (N, ...)
    with `labels` (N,)."""
    session = ort_session(path)
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = session.run(None, {"input": images[i : i + batch_size].cpu().float().numpy()})[0]
        correct += count_correct(torch.from_numpy(logits), labels[i : i + batch_size].cpu(), int(labels.max()))
    return 100.0 * correct / len(images)
