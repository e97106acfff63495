"""The quantization stage. Takes a model, its layer registry and one bit-width per layer; gives
the configuration's cost (size, BOPs), a fake-quantized copy of the model and its accuracy after
post-training quantization. Proxies (HAWQ-V2's perturbation), bench building and allocation
all build on it, so it comes right after the model."""
from .cost import BITS_PER_MB, check_bits, layer_size_bits, layer_size_mb, model_bops, model_size_mb, weight_count
from .fakequant import QuantSettings, WeightCache, quantize_model, quantize_weight, weight_quantization_error
from .ptq import PtqEvaluator

__all__ = ["BITS_PER_MB", "PtqEvaluator", "QuantSettings", "WeightCache", "check_bits", "layer_size_bits",
           "layer_size_mb", "model_bops", "model_size_mb", "quantize_model", "quantize_weight", "weight_count",
           "weight_quantization_error"]
