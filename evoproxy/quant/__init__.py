"""Quantization: the cost model (size, BOPs) and fake-quantization of a model copy."""
