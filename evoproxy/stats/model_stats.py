"""The statistics' settings and their containers: per layer (LayerStats) and per model
(ModelStats), with the plain blob a cache entry stores (see compute.py for what each tensor is).
The blob holds no Q, only the bit-widths it is read at: it is computed from W when read."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch

from ..model import LayerInfo
from ..params import Interval, OneOf, check_parameters
from ..quant import WeightFormat
from .perturbation import PERTURBATIONS, sqnr_db
from .quant_errors import QBITS, QuantizationErrors

TENSOR_FIELDS = ("W", "G", "A", "H", "V")
# The layer's place in the network, which no statistic sees, as 0-d float64 tensors: whether a
# BatchNorm takes its output (re-estimated after quantization, it repairs much of the layer's
# shift), its depth (index / (L − 1)), its fan-in (weight elements per output), whether it is
# depthwise or grouped, and whether it is the last layer.
STRUCTURE_FIELDS = ("NORM", "DEPTH", "FANIN", "GROUPED", "HEAD")
STATS_BATCH = 64  # calibration images the statistics are computed on by default
TEXT_STATS_BATCH = 8  # token windows (2048 tokens of 256): a language model's Hessian costs far more per sample
FORMAT_VERSION = 6  # of the blob; part of the cache key (6: Q no longer stored)


def default_batch(source) -> int:
    """The calibration batch the statistics take on a data source by default: STATS_BATCH images or
    TEXT_STATS_BATCH token windows, or the whole calibration pool where it is smaller (a few
    distilled images, a small folder)."""
    return min(TEXT_STATS_BATCH if source.is_text else STATS_BATCH, len(source.calibration()[0]))


@dataclass(frozen=True)
class StatsSettings:
    """How the statistics are computed; part of the cache key."""

    hutchinson_samples: int = 64  # most Rademacher samples for diag/trace
    hutchinson_tol: float = 1e-3  # relative change of the summed trace that stops sampling early
    power_iters: int = 20  # most Lanczos steps (Hessian products) per layer for the top eigenvalue
    power_tol: float = 1e-3  # relative change of the eigenvalue that stops the iteration
    act_max_elems: int = 65536  # cap on stored activation elements per layer
    seed: int = 0
    exclude: tuple[str, ...] = ()  # layer names or patterns kept out of the layer registry
    output: str | None = None  # the model's output selector (load_model's output): which output the loss is taken on
    hessian: bool = True  # H, its trace and top eigenvalue (most of the cost); off for proxies that read none
    perturbations: bool = True  # the measured output perturbations (perturbation.py); off for proxies that read none
    group_size: int | None = None  # Q's weight quantizer (quant.WeightFormat): None per channel, else per group
    asymmetric: bool = False
    # Wall-clock bound of the Hessian (half for Hutchinson, half for the top eigenvalues; at least one
    # sample and one step per layer): None, no bound. A bounded Hessian depends on the machine's speed.
    hessian_seconds: float | None = None
    # The bit-width every other layer's weights sit at while a layer's output perturbation is measured
    # (perturbation.py): None, float (the tools' way); else near the budget's average, the operating point
    # where the allocation trades bits, since a layer's effect there differs from its effect alone.
    perturb_around: int | None = None

    CONSTRAINTS = {
        "hutchinson_samples": Interval(1, None, integer=True),
        "hutchinson_tol": Interval(0, None),
        "power_iters": Interval(1, None, integer=True),
        "power_tol": Interval(0, None),
        "act_max_elems": Interval(1, None, integer=True),
        "hessian_seconds": [Interval(0, None, closed="neither"), OneOf((None,))],
        "perturb_around": [OneOf(QBITS), OneOf((None,))],
    }

    def __post_init__(self):
        object.__setattr__(self, "exclude", tuple(self.exclude))  # a list when read back from a cache file
        check_parameters(self)
        if not self.perturbations:  # nothing measured around it: one cache entry either way
            object.__setattr__(self, "perturb_around", None)
        self.weight_format  # checks group_size and asymmetric

    @property
    def weight_format(self) -> WeightFormat:
        """The weight quantizer whose error Q is."""
        return WeightFormat(self.group_size, self.asymmetric)


@dataclass
class LayerStats:
    """Statistics of one quantizable layer; tensors are float32 except V and the per-bit ones (float64)."""

    info: LayerInfo
    W: torch.Tensor  # weight_shape
    G: torch.Tensor  # weight_shape
    A: torch.Tensor  # (batch, out_channels, h, w) or (batch, out_channels, length) subsampled, or a Linear's output
    H: torch.Tensor  # weight_shape, Hessian diagonal estimate
    V: torch.Tensor  # weight_shape, SynFlow gradient / e^synflow_log_scale
    hessian_trace: float
    hessian_eig: float
    # bit-width → weight_shape, (Q_b(W) − W)²: a QuantizationErrors (computed from W when read), or a dict
    Q: Mapping[int, torch.Tensor] = field(default_factory=dict)
    # the measured output perturbations (perturbation.py): bit-width → (batch,), float64
    MSE: dict[int, torch.Tensor] = field(default_factory=dict)
    KL: dict[int, torch.Tensor] = field(default_factory=dict)
    TAYLOR: dict[int, torch.Tensor] = field(default_factory=dict)
    # STRUCTURE_FIELDS (None where unknown: statistics built by hand)
    NORM: torch.Tensor | None = None
    DEPTH: torch.Tensor | None = None
    FANIN: torch.Tensor | None = None
    GROUPED: torch.Tensor | None = None
    HEAD: torch.Tensor | None = None

    @property
    def numel(self) -> int:
        return self.W.numel()


@dataclass
class ModelStats:
    """Statistics of all quantizable layers of one model on one calibration batch."""

    model: str
    weights_hash: str
    batch_hash: str
    settings: StatsSettings
    layers: list[LayerStats]
    synflow_log_scale: float
    hutchinson_samples_used: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds per statistic
    # The cache entry they were read from or written to, {"path", "sha256"} (None: not cached), so
    # that a result computed from them can name it; not part of the entry itself.
    cache_entry: dict | None = field(default=None, compare=False)

    def to_blob(self) -> dict:
        """Plain dict of tensors, numbers and strings, loadable with torch.load(weights_only=True)."""
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "weights_hash": self.weights_hash,
            "batch_hash": self.batch_hash,
            "settings": asdict(self.settings),
            "synflow_log_scale": self.synflow_log_scale,
            "hutchinson_samples_used": self.hutchinson_samples_used,
            "timings": dict(self.timings),
            "layers": [
                {
                    "info": l.info.to_dict(),
                    **{k: getattr(l, k) for k in TENSOR_FIELDS},
                    "hessian_trace": l.hessian_trace,
                    "hessian_eig": l.hessian_eig,
                    "Q": sorted(l.Q),
                    **{k: getattr(l, k) for k in PERTURBATIONS},
                    **{k: getattr(l, k) for k in STRUCTURE_FIELDS},
                }
                for l in self.layers
            ],
        }

    @classmethod
    def from_blob(cls, blob: dict) -> "ModelStats":
        settings = StatsSettings(**blob["settings"])
        layers = []
        for d in blob["layers"]:
            info = dict(d["info"], weight_shape=tuple(d["info"]["weight_shape"]))
            layers.append(
                LayerStats(
                    LayerInfo(**info),
                    *(d[k] for k in TENSOR_FIELDS),
                    d["hessian_trace"],
                    d["hessian_eig"],
                    QuantizationErrors(d["W"], settings.weight_format, d["Q"]) if d["Q"] else {},
                    **{k: d[k] for k in PERTURBATIONS},
                    **{k: d[k] for k in STRUCTURE_FIELDS},
                )
            )
        return cls(
            blob["model"],
            blob["weights_hash"],
            blob["batch_hash"],
            settings,
            layers,
            blob["synflow_log_scale"],
            blob["hutchinson_samples_used"],
            blob["timings"],
        )

    def table(self) -> list[dict]:
        """One row of scalar summaries per layer, for printing or JSON."""
        return [
            {
                "index": l.info.index,
                "name": l.info.name,
                "kind": l.info.kind,
                "shape": list(l.info.weight_shape),
                "params": l.info.params,
                "macs": l.info.macs,
                "hessian_trace": l.hessian_trace,
                "hessian_eig": l.hessian_eig,
                "grad_norm": l.G.norm().item(),
                "weight_norm": l.W.norm().item(),
                "act_std": l.A.std().item(),
                "synflow": (l.V * l.W.abs().double()).sum().item(),
                # the tools' view of the layer alone at 4 and 2 bits (nan without the output perturbations)
                "sqnr_4bit": sqnr_db(l.MSE[4].mean()).item() if 4 in l.MSE else math.nan,
                "kl_2bit": l.KL[2].mean().item() if 2 in l.KL else math.nan,
            }
            for l in self.layers
        ]
