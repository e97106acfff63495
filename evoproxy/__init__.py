"""evoproxy: evolve training-free proxies for mixed-precision quantization, then use them to
choose per-layer bit-widths and quantize a model."""

__version__ = "0.1.0"
