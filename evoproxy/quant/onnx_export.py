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

Before the file is put in place, onnxruntime runs it on a batch of images and it must compute what
the PyTorch model computes (`onnx_runtime.check_outputs`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import EvoproxyError, exception_line
from ..files import replacing
from ..model import LayerInfo, quantizable_modules
from .onnx_runtime import OnnxCheck, check_outputs
from .qat import LsqQuantizer

T = TypeVar("T")
OPSET = 17  # per-channel QDQ needs 13; 17 has LayerNormalization as one op
INT8_MAX, UINT8_MAX = 127, 255


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


def qdq_model(qmodel: nn.Module, layers: Sequence[LayerInfo], fused: Collection[str] = ()) -> nn.Module:
    """A copy of the LSQ model `qmodel` (eval mode) whose quantizers are fake-quantize ops that
    torch.onnx exports as QDQ pairs; it computes what `qmodel` does, up to float rounding. The
    layers named in `fused` keep their bias, for an int8 kernel to take as int32 (`onnx_int8`).
    Raises EvoproxyError for a layer whose weights or input have more than 8 bits and fewer than 32."""
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
        if module.bias is not None and layer.name not in fused:
            # Zeroed, not removed, so that a Linear stays a Gemm on its weight's DQ pair (without a bias,
            # torch writes a MatMul on a Transpose); onnxruntime's int32 of zero is exact.
            module.register_buffer("bias_after", module.bias.detach().clone())
            with torch.no_grad():
                module.bias.zero_()
            module.register_forward_hook(_add_bias)
    return out


def write_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path, check: Callable[[Path], T]) -> T:
    """Write `model` (CPU, eval mode) with torch.onnx to the ONNX file `path`: input "input"
    (batch, *input_shape) float32, output "logits", the batch of any size. `check` gets the
    written file before it is put in place (raising leaves `path` as it was); returns what it returns."""
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
        return check(tmp)


def export_onnx(
    qmodel: nn.Module,
    layers: Sequence[LayerInfo],
    input_shape: Sequence[int],
    path: str | Path,
    check_images: torch.Tensor | None = None,
    log: Callable[[str], None] | None = None,
) -> OnnxCheck | None:
    """Write the LSQ model `qmodel` (from `lsq_model`, trained or not) to the ONNX file `path`
    with QDQ pairs on the quantized weights and inputs of `layers` (as `write_onnx`).
    With `check_images` (N, *input_shape), the file is first run in onnxruntime on them and put in
    place only if it computes what `qmodel` computes (`check_outputs`, `log` getting its progress
    lines; else EvoproxyError, and `path` is left as it was); returns what the check found (None unchecked)."""
    model = qdq_model(qmodel, layers).cpu().float()
    return write_onnx(
        model,
        input_shape,
        path,
        lambda tmp: None if check_images is None else check_outputs(qmodel, tmp, check_images, Path(path), log),
    )
