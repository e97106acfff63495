"""Post-training-quantization quality (top-1 accuracy, or a language model's perplexity) of many
bit configurations of one model on one evaluation set, sharing the quantized weights and the work
of common leading layers (a Sweep), and measuring each distinct configuration once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from ..model import DataSource, LayerInfo, check_device, metric_of, open_data
from .cost import check_bits, per_layer_bits
from .fakequant import QuantSettings, WeightCache, quantize_model
from .sweep import Sweep, Untraceable


class PtqEvaluator:
    """The metric of fake-quantized copies of `model`: top-1 accuracy (%) of a classifier, perplexity
    of a language model (`metric`, from the labels' shape).

    `layers` is the model's layer registry, `calib_images` the normalized calibration images
    (N_c, C, H, W) for BatchNorm re-estimation and activation ranges, `images` (N, C, H, W)
    normalized and `labels` (N,) int64 the evaluation set (or token windows (N, T) and their next
    tokens (N, T)). One WeightCache serves every configuration; `measured` maps each configuration
    (weight bits, activation bits: tuples in registry order) to its value. A model that the sweep
    cannot follow (`sweep.Untraceable`: fx cannot trace it, it writes tensors in place, ...) is
    measured one configuration at a time, with the same results, only slower. `log` gets a line now
    and then while a pass over the images lasts (pace.paced)."""

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[LayerInfo],
        calib_images: torch.Tensor,
        images: torch.Tensor,
        labels: torch.Tensor,
        settings: QuantSettings = QuantSettings(),
        log: Callable[[str], None] | None = None,
    ):
        self.model, self.layers, self.calib_images, self.log = model, list(layers), calib_images, log
        self.images, self.labels, self.settings = images, labels, settings
        self.metric = metric_of(labels)
        self.cache = WeightCache(model, self.layers, settings.weight_format)
        self.measured: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}
        try:
            self.sweep: Sweep | None = Sweep(model, self.layers, self.cache, settings.bn_recalibration)
        except Untraceable:
            self.sweep = None

    @classmethod
    def on_data(
        cls,
        model: nn.Module,
        layers: Sequence[LayerInfo],
        eval_size: int | None,
        settings: QuantSettings = QuantSettings(),
        source: DataSource | None = None,
        device: str = "cpu",
        log: Callable[[str], None] | None = None,
    ) -> PtqEvaluator:
        """An evaluator on the first `eval_size` test images of `source` (default: the shipped
        Fashion-MNIST), calibrated on its calibration pool (the benchmarks' setting), on `device`."""
        calib, images, labels = (source or open_data()).ptq_data(eval_size)
        device = check_device(device)
        return cls(model.to(device), layers, calib.to(device), images.to(device), labels.to(device), settings, log)

    def fp_value(self) -> float:
        """The metric of the full-precision model."""
        return self.metric.measure(self.model, self.images, self.labels, log=self.log)

    def measure(self, w_bits: Sequence[int], a_bits: int | Sequence[int] | None = None) -> float:
        """The metric with per-layer weight bits `w_bits` (registry order) and activation bits `a_bits`
        (one for every layer or one per layer; None: the settings')."""
        return self.measure_many([w_bits], a_bits)[0]

    def measure_many(self, configs: Sequence[Sequence[int]], a_bits: int | Sequence[int] | None = None) -> list[float]:
        """`measure` of each weight bit configuration in `configs`, in one sweep."""
        act = per_layer_bits(
            self.layers, self.settings.act_bits if a_bits is None else a_bits, "the activation bit configuration"
        )
        keys = [(tuple(int(b) for b in w_bits), act) for w_bits in configs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.measured))
        for w_bits, _ in todo:
            check_bits(self.layers, w_bits, "the weight bit configuration", low=2)
        if todo and self.sweep is not None:
            configs = [tuple(zip(w, a)) for w, a in todo]
            found = self.sweep.measure(configs, self.calib_images, self.images, self.labels, self.log)
            self.measured.update(zip(todo, found))
        elif todo:
            settings = replace(self.settings, act_bits=act)
            for w_bits, _ in todo:
                qmodel = quantize_model(
                    self.model, self.layers, w_bits, self.calib_images, settings, self.cache, self.log
                )
                self.measured[w_bits, act] = self.metric.measure(qmodel, self.images, self.labels, log=self.log)
        return [self.measured[k] for k in keys]
