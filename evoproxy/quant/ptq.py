"""Post-training-quantization accuracy of many bit configurations of one model on one
evaluation set, sharing the quantized weights and measuring each distinct configuration once."""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from ..model import LayerInfo, accuracy, evaluation_data
from .fakequant import QuantSettings, WeightCache, quantize_model


class PtqEvaluator:
    """Top-1 accuracy (%) of fake-quantized copies of `model`.

    `layers` is the model's layer registry, `calib_images` the normalized calibration images
    (N_c, C, H, W) for BatchNorm re-estimation and activation ranges, `images` (N, C, H, W)
    normalized and `labels` (N,) int64 the evaluation set. One WeightCache serves every
    configuration; `measured` maps each weight configuration (tuple, registry order) to its accuracy."""

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], calib_images: torch.Tensor,
                 images: torch.Tensor, labels: torch.Tensor, settings: QuantSettings = QuantSettings()):
        self.model, self.layers, self.calib_images = model, list(layers), calib_images
        self.images, self.labels, self.settings = images, labels, settings
        self.cache = WeightCache(model, self.layers)
        self.measured: dict[tuple[int, ...], float] = {}

    @classmethod
    def on_fmnist(cls, model: nn.Module, layers: Sequence[LayerInfo], eval_size: int,
                  settings: QuantSettings = QuantSettings(), data_dir: str | os.PathLike | None = None) -> PtqEvaluator:
        """An evaluator on the first `eval_size` Fashion-MNIST test images, calibrated on the
        calibration subset shipped in the package (the benchmarks' setting)."""
        return cls(model, layers, *evaluation_data(eval_size, data_dir), settings)

    def fp_accuracy(self) -> float:
        """Accuracy of the full-precision model."""
        return accuracy(self.model, self.images, self.labels)

    def accuracy(self, w_bits: Sequence[int]) -> float:
        """Accuracy with per-layer weight bits `w_bits` (registry order) and the settings' activations."""
        key = tuple(int(b) for b in w_bits)
        if key not in self.measured:
            qmodel = quantize_model(self.model, self.layers, key, self.calib_images, self.settings, self.cache)
            self.measured[key] = accuracy(qmodel, self.images, self.labels)
        return self.measured[key]
