"""The statistics stage. Takes a model and a calibration batch; gives ModelStats, per layer the
tensors W, G, A, H, V with the Hessian trace and top eigenvalue, and the weight quantization
error Q (computed from W when read) and the measured output perturbations per bit-width (what
every proxy reads), computed once per (model, batch, settings) and cached on disk."""

from .cache import cache_dir, load_or_compute_stats, load_stats_file, stats_cache_path
from .compute import compute_stats
from .hessian import hutchinson, top_eigenvalue
from .model_stats import (
    STATS_BATCH,
    TENSOR_FIELDS,
    TEXT_STATS_BATCH,
    LayerStats,
    ModelStats,
    StatsSettings,
    default_batch,
)
from .perturbation import PERTURBATIONS, output_perturbations
from .quant_errors import QBITS, QuantizationErrors
from .synflow import synflow_gradients

__all__ = [
    "PERTURBATIONS",
    "QBITS",
    "STATS_BATCH",
    "TENSOR_FIELDS",
    "TEXT_STATS_BATCH",
    "LayerStats",
    "ModelStats",
    "PERTURBATIONS",
    "QuantizationErrors",
    "StatsSettings",
    "cache_dir",
    "compute_stats",
    "default_batch",
    "hutchinson",
    "load_or_compute_stats",
    "load_stats_file",
    "output_perturbations",
    "stats_cache_path",
    "synflow_gradients",
    "top_eigenvalue",
]
