"""Post-training-quantization accuracy of many bit configurations of one model on one
evaluation set, sharing the quantized weights and measuring each distinct configuration once."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from ..model import DataSource, LayerInfo, accuracy, check_device, open_data
from .cost import per_layer_bits
from .fakequant import QuantSettings, WeightCache, quantize_model


class PtqEvaluator:
    """Top-1 accuracy (%) of fake-quantized copies of `model`.

    `layers` is the model's layer registry, `calib_images` the normalized calibration images
    (N_c, C, H, W) for BatchNorm re-estimation and activation ranges, `images` (N, C, H, W)
    normalized and `labels` (N,) int64 the evaluation set. One WeightCache serves every
    configuration; `measured` maps each configuration (weight bits, activation bits: tuples in
    registry order) to its accuracy."""

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], calib_images: torch.Tensor,
                 images: torch.Tensor, labels: torch.Tensor, settings: QuantSettings = QuantSettings()):
        self.model, self.layers, self.calib_images = model, list(layers), calib_images
        self.images, self.labels, self.settings = images, labels, settings
        self.cache = WeightCache(model, self.layers)
        self.measured: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}

    @classmethod
    def on_data(cls, model: nn.Module, layers: Sequence[LayerInfo], eval_size: int | None,
                settings: QuantSettings = QuantSettings(), source: DataSource | None = None,
                device: str = "cpu") -> PtqEvaluator:
        """An evaluator on the first `eval_size` test images of `source` (default: the shipped
        Fashion-MNIST), calibrated on its calibration pool (the benchmarks' setting), on `device`."""
        calib, images, labels = (source or open_data()).ptq_data(eval_size)
        device = check_device(device)
        return cls(model.to(device), layers, calib.to(device), images.to(device), labels.to(device), settings)

    def fp_accuracy(self) -> float:
        """Accuracy of the full-precision model."""
        return accuracy(self.model, self.images, self.labels)

    def accuracy(self, w_bits: Sequence[int], a_bits: int | Sequence[int] | None = None) -> float:
        """Accuracy with per-layer weight bits `w_bits` (registry order) and activation bits `a_bits`
        (one for every layer or one per layer; None: the settings')."""
        settings = self.settings if a_bits is None else replace(self.settings, act_bits=a_bits)
        key = (tuple(int(b) for b in w_bits),
               per_layer_bits(self.layers, settings.act_bits, "the activation bit configuration"))
        if key not in self.measured:
            qmodel = quantize_model(self.model, self.layers, key[0], self.calib_images, settings, self.cache)
            self.measured[key] = accuracy(qmodel, self.images, self.labels)
        return self.measured[key]
