"""The quantization stage. Takes a model, its layer registry and one bit-width per layer; gives
the configuration's cost (size, BOPs), a fake-quantized copy of the model and its accuracy after
post-training quantization (round-to-nearest, or with rounding learned block by block:
AdaRound), quantization-aware training with learned step sizes (LSQ), and the
quantized model as an ONNX file with QuantizeLinear/DequantizeLinear pairs or, for a `transformers`
model, as packed integers (compressed-tensors).
Proxies (HAWQ-V2's perturbation), bench building and allocation all build on it, so it comes
right after the model."""

from .adaround import AdaRoundQuantizer, AdaRoundSettings, BlockRecord, adaround_model, reconstruction_blocks
from .cost import (
    BITS_PER_MB,
    SCALE_BITS,
    WeightFormat,
    average_bits,
    check_bits,
    is_bit_width,
    layer_size_bits,
    layer_size_mb,
    model_bops,
    model_size_mb,
    per_layer_bits,
    size_mb_at_average_bits,
    weight_count,
)
from .fakequant import ActQuant, QuantSettings, WeightCache, quantize_model
from .onnx_export import export_onnx, qdq_model
from .onnx_int8 import export_int8_onnx
from .onnx_runtime import OnnxCheck, onnxruntime_accuracy, output_tolerance
from .packed import check_packable, packed_state_dict, save_packed
from .ptq import PtqEvaluator
from .qat import DEFAULT_LR, EpochRecord, LsqQuantizer, QatSettings, epoch_batches, load_qat_state, lsq_model, train_qat
from .weights import WeightLevels, quantize_levels, quantize_weight, weight_quantization_error, weight_steps

__all__ = [
    "ActQuant",
    "AdaRoundQuantizer",
    "AdaRoundSettings",
    "BITS_PER_MB",
    "BlockRecord",
    "DEFAULT_LR",
    "EpochRecord",
    "LsqQuantizer",
    "OnnxCheck",
    "PtqEvaluator",
    "QatSettings",
    "QuantSettings",
    "SCALE_BITS",
    "WeightCache",
    "WeightFormat",
    "WeightLevels",
    "adaround_model",
    "average_bits",
    "check_bits",
    "check_packable",
    "epoch_batches",
    "export_int8_onnx",
    "export_onnx",
    "is_bit_width",
    "layer_size_bits",
    "layer_size_mb",
    "load_qat_state",
    "lsq_model",
    "model_bops",
    "model_size_mb",
    "onnxruntime_accuracy",
    "output_tolerance",
    "packed_state_dict",
    "per_layer_bits",
    "qdq_model",
    "quantize_levels",
    "quantize_model",
    "quantize_weight",
    "reconstruction_blocks",
    "save_packed",
    "size_mb_at_average_bits",
    "train_qat",
    "weight_count",
    "weight_quantization_error",
    "weight_steps",
]
